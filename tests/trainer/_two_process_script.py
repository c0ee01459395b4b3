"""Run by tests/trainer/test_distributed.py under `accelerate launch --num_processes 2` (CPU, gloo).

Each rank writes what it saw per generation batch: its rewards and the advantages MAPO folded, so the test can
check that a prompt group split across the two ranks was normalised over the whole group.
"""

from __future__ import annotations

import json
import os
import sys

from datasets import Dataset

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mapo.testing import tiny_qwen2_audio, tiny_qwen2_audio_processor  # noqa: E402
from mapo.trainer import MAPOTrainer  # noqa: E402
from mapo.trainer.mapo_trainer import SEQ_ADVANTAGES_KEY  # noqa: E402
from trainer.conftest import VARIED_REWARDS, audio_rows, tiny_config  # noqa: E402


class RecordingMAPOTrainer(MAPOTrainer):
    records: list = []

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        weights = self.reward_weights.tolist()
        rewards = [sum(w * r for w, r in zip(weights, row)) for row in self._local_rewards_per_func.tolist()]
        self.records.append({"rewards": rewards, "advantages": out[SEQ_ADVANTAGES_KEY].tolist()})
        return out


def main(out_dir: str) -> None:
    processor = tiny_qwen2_audio_processor()
    model = tiny_qwen2_audio(tokenizer=processor.tokenizer, seed=0)
    # G = 4 completions per prompt, 2 per rank: every group is split across the two processes.
    args = tiny_config(
        type("P", (), {"__truediv__": lambda self, x: os.path.join(out_dir, x)})(),
        per_device_train_batch_size=2,
        num_generations=4,
        max_steps=3,
        max_completion_length=8,
        beta=0.01,
    )
    trainer = RecordingMAPOTrainer(
        model=model,
        reward_funcs=VARIED_REWARDS,
        args=args,
        train_dataset=Dataset.from_list(audio_rows(4)),
        processing_class=processor,
    )
    trainer.train()
    rank = trainer.accelerator.process_index
    logs = [h for h in trainer.state.log_history if "loss" in h]
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as fh:
        json.dump({"world": trainer.accelerator.num_processes, "records": trainer.records, "logs": logs}, fh)


if __name__ == "__main__":
    main(sys.argv[1])
