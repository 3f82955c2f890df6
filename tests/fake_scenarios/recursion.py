"""recursion: a depth-2 tree of child RLMs, for the Rust runtime's e2e tests.

Loaded by fake_llm.py through FAKE_LLM_EXTRA_SCENARIOS=<this folder>; speaks
the `generic` dialect (```repl blocks, FINAL(...)).  Needs limits.max_depth=2.

For params {"values": [3, 5, 7]} (the default) the tree is:

  root (depth 0), step 0: answers = rlm_query_batched(["RECURSE_L1[3]", ...])
                          print("TOTAL:", sum(int(a) for a in answers))
                  step 1: FINAL(<TOTAL read from the observation>)
  child "RECURSE_L1[v]" (depth 1, a real RLM), step 0:
                          r = rlm_query("RECURSE_L2[v]"); FINAL(int(r) + v)   (FINAL in code)
  child "RECURSE_L2[v]" (depth 2, a real RLM), step 0:
                          sq = llm_query("SQUARE[v]"); print("SQ:", sq)
                  step 1: FINAL(<SQ read from the observation>)      (FINAL as a text line)
  plain sub-call "SQUARE[v]": answers v*v

Answer: sum(v*v + v) (98 for the default).  Model calls: 2 root + per value
1 (L1) + 2 (L2) + 1 (SQUARE) = 14 for three values; root_calls = 2 and
sub_calls = 12 in /control/stats.  Child RLM turns are told apart from plain
calls by their system prompt (a child RLM gets the standard RLM system prompt,
a plain llm_query call carries only the prompt as its user message); a
RECURSE_* task arriving as a plain call means rlm_query degraded to a model
call, which is recorded as a note (the tests require no notes).
"""
from __future__ import annotations

import re

from fakellm.scenarios import Scenario
from fakellm.protocol import Reply

L1_RE = re.compile(r"RECURSE_L1\[(\d+)\]")
L2_RE = re.compile(r"RECURSE_L2\[(\d+)\]")
SQUARE_RE = re.compile(r"SQUARE\[(\d+)\]")
TOTAL_RE = re.compile(r"TOTAL: (-?\d+)")
SQ_RE = re.compile(r"SQ: (-?\d+)")


class RecursionScenario(Scenario):
    name = "recursion"
    sub_marker = None  # is_sub is overridden: three markers

    @property
    def values(self) -> list[int]:
        return [int(v) for v in self.params.get("values", [3, 5, 7])]

    def expected(self) -> str:
        return str(sum(v * v + v for v in self.values))

    # -- routing -----------------------------------------------------------
    def is_sub(self, call) -> bool:
        first = call.first_user
        return bool(SQUARE_RE.search(first) or L1_RE.search(first) or L2_RE.search(first))

    @staticmethod
    def _is_rlm(call) -> bool:
        """A child RLM turn has a system prompt; a plain sub-call has none."""
        return bool(call.system.strip())

    # -- the root RLM --------------------------------------------------------
    def root(self, d, call):
        step = d.step_index(call)
        if step == 0:
            prompts = [f"RECURSE_L1[{v}]" for v in self.values]
            code = (f"prompts = {prompts!r}\n"
                    "answers = rlm_query_batched(prompts)\n"
                    "print(\"ANSWERS:\", answers)\n"
                    "total = sum(int(str(a).strip()) for a in answers)\n"
                    "print(\"TOTAL:\", total)")
            return d.render_code(code)
        if step > 1:
            self.note(f"root: extra call at step {step}")
        m = TOTAL_RE.search(d.observation(call))
        if not m:
            self.note(f"root step {step}: no TOTAL in observation: {d.observation(call)[:300]!r}")
        return d.render_final(m.group(1) if m else "NOT_FOUND")

    # -- children and plain sub-calls ---------------------------------------
    def sub(self, d, call):
        first = call.first_user
        m = SQUARE_RE.search(first)
        if m:
            v = int(m.group(1))
            return Reply(content=str(v * v))
        m = L2_RE.search(first)
        if m:
            return self._level2(d, call, int(m.group(1)))
        m = L1_RE.search(first)
        if m:
            return self._level1(d, call, int(m.group(1)))
        self.note(f"unrecognised sub-call: {first[:200]!r}")
        return Reply(content="UNEXPECTED_SUBCALL")

    def _level1(self, d, call, v: int):
        if not self._is_rlm(call):
            self.note(f"RECURSE_L1[{v}] arrived as a plain call (rlm_query degraded at depth 0)")
            return Reply(content=str(v * v + v))
        step = d.step_index(call)
        if step == 0:
            code = (f"r = rlm_query(\"RECURSE_L2[{v}]\")\n"
                    "print(\"L2:\", r)\n"
                    f"FINAL(int(str(r).strip()) + {v})")
            return d.render_code(code)
        self.note(f"RECURSE_L1[{v}]: extra call at step {step}: {d.observation(call)[:300]!r}")
        return d.render_final("L1_FAILED")

    def _level2(self, d, call, v: int):
        if not self._is_rlm(call):
            self.note(f"RECURSE_L2[{v}] arrived as a plain call (rlm_query degraded at depth 1)")
            return Reply(content=str(v * v))
        step = d.step_index(call)
        if step == 0:
            code = (f"sq = llm_query(\"SQUARE[{v}]\")\n"
                    "print(\"SQ:\", sq)")
            return d.render_code(code)
        if step > 1:
            self.note(f"RECURSE_L2[{v}]: extra call at step {step}")
        m = SQ_RE.search(d.observation(call))
        if not m:
            self.note(f"RECURSE_L2[{v}] step {step}: no SQ in observation: "
                      f"{d.observation(call)[:300]!r}")
        return d.render_final(m.group(1) if m else "NOT_FOUND")
