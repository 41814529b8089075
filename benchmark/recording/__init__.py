"""The recording layer: one content key, one crash-safe log per case with a
lock, one place that applies the record modes, for every answer source
(HTTP models through vcrpy, in-process models, the answer extractor)."""

from benchmark.recording.answers import answer_requests
from benchmark.recording.completions import MalformedResponse, answer_from_completion, parse_completion
from benchmark.recording.keys import canonical_json, content_key
from benchmark.recording.recording import RECORD_MODES, Recording, RecordingWriteError
from benchmark.recording.scrub import Scrubber

__all__ = ["RECORD_MODES", "MalformedResponse", "Recording", "RecordingWriteError", "Scrubber",
           "answer_from_completion", "answer_requests", "canonical_json", "content_key", "parse_completion"]
