#!/usr/bin/env python3
"""Coursework entry point: python run_llama.py --option generate|prompt|finetune|lora|prefix|mmlu ...

All logic lives in minillama.cli (testable); this file only calls it."""
import sys

from minillama.cli import main

if __name__ == "__main__":
    sys.exit(main())
