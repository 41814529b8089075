"""Repository wiring. The astrobench plugin itself is registered through the
``pytest11`` entry point (see pyproject.toml), so it also works outside this repo."""
