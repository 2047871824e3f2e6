"""The demo's bundled data: photos that ship inside installed packages and ImageNet class names."""
