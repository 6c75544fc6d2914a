"""QR images: rendering to PNG and SVG, and the cache of rendered images; bytes in, bytes out."""
