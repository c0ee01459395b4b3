"""``mapo train --help-mapo``: MAPO's own settings, before the ~1,300 lines of inherited TRL/transformers fields.

``mapo train --help`` prints this first, then the full list.
"""

from __future__ import annotations

import dataclasses
import textwrap

from .config_reference import mapo_fields


def _describe(field: dataclasses.Field) -> str:
    if field.default is not dataclasses.MISSING:
        default = field.default
    elif field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        default = field.default_factory()  # type: ignore[misc]
    else:
        default = None
    head = f"  --{field.name} (default: {default!r})"
    body = textwrap.fill(
        field.metadata.get("help", ""), width=110, initial_indent=" " * 6, subsequent_indent=" " * 6
    )
    return f"{head}\n{body}" if body.strip() else head


def mapo_help(script_cls) -> str:
    """The help text of ``mapo train``'s own settings: script arguments, then MAPOConfig's fields."""
    sections = [
        "usage: mapo train --config FILE.yaml [--FIELD VALUE ...]   (command line overrides the YAML)",
        "",
        "mapo train settings (data, rewards, judge, run):",
        *(_describe(f) for f in dataclasses.fields(script_cls)),
        "",
        "MAPO settings (MAPOConfig; paper symbols, Table 5 defaults):",
        *(_describe(f) for f in mapo_fields()),
        "",
        "Every TRL GRPOConfig / transformers TrainingArguments field (output_dir, learning_rate, num_generations, "
        "save_steps, report_to, ...) and TRL ModelConfig field (model_name_or_path, dtype, use_peft, lora_r, ...) "
        "is accepted too: `mapo train --help` lists them all. --debug shows tracebacks.",
    ]
    return "\n".join(sections)
