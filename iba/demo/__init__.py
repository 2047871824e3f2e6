"""The demo: its bundled data (photos that ship inside installed packages, ImageNet class names) and
the framework-free runner interface (:mod:`iba.demo.runners`) the adapters' runners implement."""
