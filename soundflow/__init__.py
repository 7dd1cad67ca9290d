"""soundflow: an always-on streaming audio interaction model and its edge runtime.

`soundflow.Listener` is the embedding API; it is imported lazily so that
`import soundflow` stays cheap and never pulls in onnxruntime or torch.
"""

__version__ = "0.1.0"

__all__ = ["Listener", "__version__"]


def __getattr__(name: str):
    if name == "Listener":
        from soundflow.runtime.listener import Listener

        return Listener
    raise AttributeError(f"module 'soundflow' has no attribute {name!r}")
