"""Root conftest: the repository's own settings for running pytest-llmperf from a checkout.

The plugin itself is registered by the ``pytest11`` entry point of the installed package
(``pip install -e .``); nothing here is needed by users of the plugin.
"""
