"""Support code of the tests (no tests here): loopback stand-ins and builders.

- ``openai_stub``: a loopback OpenAI chat-completions server answering from the image it receives.
- ``batch_server``: the same server with the OpenAI Files and Batches endpoints, scripted per batch.
- ``file_server``: a loopback file server and builders of the datasets' real file formats.
- ``tiny_llava``: a tiny, randomly initialised LLaVA-NeXT (+ processor) built offline.
- ``folder_task``: a two-class folder task answered by the OpenAI stand-in (images, requests, config,
  session) for the recording, progress and wheel tests.
- ``e2e_world``: the data, user config and expected accuracies of the end-to-end runs of
  ``pytest cases`` (the ``world`` fixture of ``tests/conftest.py`` serves them).
- ``chromium``: headless Chromium for the HTML tests (skipped where none is on PATH).
- ``results``: synthetic ``CaseResult`` builders for the report tests (made-up numbers, no model).

Test modules import from here, never from one another.
"""
