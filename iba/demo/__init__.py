"""The demo: its bundled data (photos that ship inside installed packages, ImageNet class names),
the framework-free runner interface (:mod:`iba.demo.runners`) the adapters' runners implement, and
what makes every backend give the same map (:mod:`iba.demo.shared`: the estimator kept
channels-first, the noise drawn once)."""
