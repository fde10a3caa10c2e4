"""acid's frame snapshot pauses the cyclic collector (cpython#106883: a
collection inside ``sys._current_frames`` can free a ``threading.local``
whose cleanup takes the lock the call holds, and the process hangs)."""

from __future__ import annotations

import gc
import sys
import threading

from pycircuit.acid import _sampler, thread_stacks


def test_frames_are_taken_with_the_collector_paused_and_it_is_restored(monkeypatch):
    seen = []
    real = sys._current_frames

    def spy():
        seen.append(gc.isenabled())
        return real()

    monkeypatch.setattr(sys, "_current_frames", spy)
    assert gc.isenabled()
    frames = _sampler.current_frames()
    assert threading.get_ident() in frames and seen == [False] and gc.isenabled()
    assert "test_frames_are_taken" in thread_stacks() and seen[-1] is False and gc.isenabled()
    gc.disable()
    try:
        _sampler.current_frames()
        assert not gc.isenabled()  # left as the caller had it
    finally:
        gc.enable()


def test_the_collector_is_back_on_even_when_the_call_fails(monkeypatch):
    def boom():
        raise RuntimeError("boom")

    monkeypatch.setattr(sys, "_current_frames", boom)
    try:
        _sampler.current_frames()
    except RuntimeError:
        pass
    assert gc.isenabled()
