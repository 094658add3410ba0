"""AdapterHub's side of tests/test_adapters_adapterhub_format.py, run by the interpreter of an
environment with adapters 1.3.0 (and the transformers it pins, 4.57.6): it never imports minillama.

    python adapterhub_oracle.py JOB.json

JOB: {"hf_dir": a LlamaForCausalLM directory (formats.hf.save_hf_dir), "inputs": a .pt with
"ids" [B, T], "new_tokens", "beams", "load": [AdapterHub directories to load and run],
"save": [{"dir", "config" (seq_bn | double_seq_bn), "seed"}: adapters to make with random
weights, save with save_adapter and run], "out": where the .pt of results goes}.
The results: {dir: {"logits": [B, T, V], "beams": [B, T + new]}} for every loaded and saved adapter.
"""
import json
import sys
import warnings

import torch


def model_with(hf_dir):
    import adapters
    from transformers import LlamaForCausalLM
    model = LlamaForCausalLM.from_pretrained(hf_dir).eval()
    model.generation_config.bos_token_id = model.generation_config.eos_token_id = None  # no hidden stop id
    adapters.init(model)
    return model


def run(model, ids, new_tokens, beams):
    with torch.no_grad():
        logits = model(ids).logits
        out = model.generate(ids, max_new_tokens=new_tokens, num_beams=beams, do_sample=False, length_penalty=1.0,
                             early_stopping=True, eos_token_id=None, pad_token_id=0)
    return {"logits": logits, "beams": out}


def main(job_path):
    with open(job_path) as f:
        job = json.load(f)
    inputs = torch.load(job["inputs"], weights_only=True)
    ids, results = inputs["ids"], {}
    for directory in job["load"]:
        model = model_with(job["hf_dir"])
        name = model.load_adapter(directory)
        model.set_active_adapters(name)
        results[directory] = run(model, ids, job["new_tokens"], job["beams"])
    for spec in job["save"]:
        model = model_with(job["hf_dir"])
        model.add_adapter("made", config=spec["config"])
        g = torch.Generator().manual_seed(spec["seed"])
        with torch.no_grad():  # every adapter weight away from its init, so each one matters
            for name, p in model.named_parameters():
                if ".adapters.made." in name:
                    p.copy_(0.3 * torch.randn(p.shape, generator=g))
        model.set_active_adapters("made")
        model.save_adapter(spec["dir"], "made")
        results[spec["dir"]] = run(model, ids, job["new_tokens"], job["beams"])
    torch.save(results, job["out"])


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    main(sys.argv[1])
