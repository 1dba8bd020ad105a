"""Reading images of every supported kind and writing files atomically."""
