__version__ = "0.28.0"
"""TEST-ONLY stand-in for torchvision (see tests/trainer/rollout/conftest.py): importable, unusable."""


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return _Unavailable(f"{__name__}.{name}")


class _Unavailable:
    def __init__(self, name):
        self._name = name

    def __getattr__(self, attr):
        return _Unavailable(f"{self._name}.{attr}")

    def __call__(self, *args, **kwargs):
        raise RuntimeError(f"{self._name}: torchvision is a test stand-in here (audio-only tests)")
