"""The CLI's options, one module each (`run(args)`), and the glue they share."""
from ..loading import load_model_and_tokenizer


def load_from_args(args):
    """(model, tokenizer) from the common flags: --pretrained-model-path, --tokenizer,
    --norm, --dtype, --use_sdpa, --chat, and the device cli.main chose."""
    return load_model_and_tokenizer(args.pretrained_model_path, args.tokenizer, norm=args.norm,
                                    device=args.device, dtype=args.dtype,
                                    use_sdpa=getattr(args, "use_sdpa", False), chat=getattr(args, "chat", False))
