"""One evaluation: the CNN, its Lightning module and trainer, memory and device handling.
The only subpackage that imports torch and Lightning at module level."""
