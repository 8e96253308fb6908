"""clickmask."""
