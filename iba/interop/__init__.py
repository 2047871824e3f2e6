"""IBA inside other libraries' APIs: Quantus' ``explain_func`` (:mod:`iba.interop.quantus`) and,
for PyTorch, Captum's attribution classes (``iba_torch.captum``).

The helpers here are NumPy-only: they find the engine of a model's framework through the
registry (:mod:`iba.backends`, the ``iba.backends`` entry points) and import that adapter only
when it is needed, so ``iba`` itself never imports a framework. See docs/interop.md.
"""

from iba.interop.common import channel_axis, explainer_for, framework_of, input_shaped

__all__ = ["channel_axis", "explainer_for", "framework_of", "input_shaped"]
