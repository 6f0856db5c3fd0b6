"""Golden bundles (``mxfp4ref golden``), the conformance checker (``mxfp4ref check``) and the
canonical test vectors (``mxfp4ref vectors``). See spec/20-golden-and-check.md."""
from .bundle import Bundle, BundleError, TensorSpec, load_bundle, write_bundle
from .check import CheckInputError, check, load_candidate
from .report import Report, TensorResult
