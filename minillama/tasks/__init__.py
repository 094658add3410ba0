"""The CLI's commands, one module each: `run(run_cfg, task_cfg) -> result`.

generate      --option generate
classify      --option prompt | finetune | lora | prefix   (--task classify)
mmlu_eval     --option mmlu
mmlu_prefix   --option prefix --task mmlu
multitask     --option prefix --task_names a,b   (one prefix per task, trained in one run)
Each task module defines its own config dataclass; cli.py builds it from the flags.
"""
