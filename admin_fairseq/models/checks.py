"""The checks of a ``transformer_admin`` configuration, before anything is built: the Admin
and DeepNet flags against each other and the rest of the model (:func:`check_admin_args`),
bf16 and fp16 against the machine (:func:`check_bf16`, :func:`check_half_precision_device`),
and a checkpoint's omegas against the model's (:func:`check_omega_shapes`). Each raises
``ValueError`` naming the flag at fault and the fix.
"""

import sys

import torch

from admin_fairseq.core.omega import canonical_scale
from admin_fairseq.models.options import DEFAULT_OUTPUT_CHANGE_SCALE, profiled
from admin_fairseq.models.profile import _omega_residuals


def check_admin_args(args):
    """Validate the Admin/DeepNet flags against the rest of the configuration, in one
    place. Raises ``ValueError`` naming the flags at fault; changes nothing in ``args``
    (``default`` stays the alias of ``O(logn)`` it is; a given or written profile is the
    profiled variant through :func:`~admin_fairseq.models.options.profiled`)."""
    scale = canonical_scale(args.admin_output_change_scale, "--admin-output-change-scale")
    is_profiled = profiled(args)
    if args.admin_profile_from and args.admin_profile_to:
        raise ValueError("--admin-profile-from reads a profile and --admin-profile-to writes "
                         "one; give one of them")
    if args.deepnet and args.admin_init:
        raise ValueError(
            "--deepnet and --admin-init are two different initialisations of the residual "
            "branches; choose one"
        )
    if not args.admin_init:
        for flag, value, default in (
            ("--admin-as-parameter", args.admin_as_parameter, False),
            ("--admin-output-change-scale", scale, DEFAULT_OUTPUT_CHANGE_SCALE),
            ("--admin-profile/--admin-profile-from/--admin-profile-to", is_profiled, False),
        ):  # fmt: skip
            if value != default:
                raise ValueError(
                    f"{flag} has no effect without --admin-init; add --admin-init or drop {flag}"
                )
    if getattr(args, "admin_omega_fp32", False) and not (args.admin_as_parameter or is_profiled):
        raise ValueError(
            "--admin-omega-fp32 keeps trainable omegas in fp32; it needs --admin-as-parameter "
            "or --admin-profile (the scalar omegas of --admin-init alone are fixed buffers)"
        )
    fp16_master_copies = (
        (getattr(args, "fp16", False) or getattr(args, "bf16", False))
        and not getattr(args, "memory_efficient_fp16", False)
        and not getattr(args, "memory_efficient_bf16", False)
        and not getattr(args, "amp", False)
    )
    # admin_profile_source: the omegas came from a profile file when the model was trained
    # and live in its checkpoint since (build_model records it); loading it profiles nothing
    given = args.admin_profile_from or args.admin_profile_to or getattr(args, "admin_profile_source", None)
    profiles_in_training = is_profiled and not given
    if profiles_in_training and fp16_master_copies:
        # fairseq's FP16Optimizer copies the parameters to fp32 when it is built, before
        # the first batch, and copies them back after every step: it would overwrite the
        # profiled omegas with their placeholder.
        raise ValueError(
            "--admin-profile cannot profile under --fp16/--bf16 with fairseq's FP16Optimizer "
            "(its fp32 copy of the weights predates the profile); use "
            "--memory-efficient-fp16 (the published recipes' setting) or --amp, or pass a "
            "profile written by a run with --admin-profile-to FILE with --admin-profile-from FILE"
        )
    if is_profiled and getattr(args, "ddp_backend", None) == "fully_sharded":
        raise ValueError(
            "--admin-profile does not support --ddp-backend fully_sharded (the profile is "
            "taken and broadcast on unsharded layers); use another --ddp-backend"
        )
    if is_profiled and scale != DEFAULT_OUTPUT_CHANGE_SCALE:
        raise ValueError(
            "--admin-output-change-scale does not apply to --admin-profile: the profiled "
            "omegas come from the data; drop one of them"
        )
    if not (args.admin_init or args.deepnet):
        return
    method = "--admin-init" if args.admin_init else "--deepnet"
    pre_ln = [
        flag
        for flag, on in (
            ("--encoder-normalize-before", args.encoder_normalize_before),
            ("--decoder-normalize-before", args.decoder_normalize_before),
        )
        if on
    ]
    if pre_ln:
        raise ValueError(
            f"{method} is defined for Post-LN Transformers only, but {' and '.join(pre_ln)} "
            f"selects Pre-LN; drop {method} to train Pre-LN, or drop "
            f"{' and '.join(pre_ln)} to train Post-LN with {method}"
        )
    for flag, value in (
        ("--encoder-layers", args.encoder_layers),
        ("--decoder-layers", args.decoder_layers),
    ):
        if value < 1:
            raise ValueError(f"{flag} must be >= 1 with {method}; got {value}")


def check_bf16(args):
    """``--bf16-autocast`` alone of the precisions, and only where it can run; fairseq's own
    ``--bf16`` refused inside fairseq-train with the reason. Checked in ``fairseq-train``
    only: a checkpoint trained in bf16 loads anywhere (its weights are fp32)."""
    if "fairseq_cli.train" not in sys.modules:
        return
    if getattr(args, "bf16", False) or getattr(args, "memory_efficient_bf16", False):
        raise ValueError(
            "fairseq 0.12's --bf16/--memory-efficient-bf16 imply --tpu (they run through "
            "torch_xla on an XLA device, on a GPU machine too); use --bf16-autocast (the "
            "recipes' --precision bf16): fp32 weights, bf16 compute, on GPUs and CPUs"
        )
    if not getattr(args, "bf16_autocast", False):
        return
    half = [flag for flag, name in (("--fp16", "fp16"), ("--memory-efficient-fp16", "memory_efficient_fp16"),
                                    ("--amp", "amp")) if getattr(args, name, False)]  # fmt: skip
    if half:
        raise ValueError(f"--bf16-autocast and {' and '.join(half)} are two precisions; give one")
    if not getattr(args, "cpu", False) and torch.cuda.is_available():
        device = getattr(args, "device_id", 0) or 0
        if not torch.cuda.is_bf16_supported():
            raise ValueError(
                f"--bf16-autocast: the GPU {torch.cuda.get_device_name(device)} (compute capability "
                f"{'.'.join(map(str, torch.cuda.get_device_capability(device)))}) does not support "
                "bfloat16; bf16 needs compute capability 8.0 or newer (A100, H100, RTX 30xx and "
                "later). Use --precision recipe (fp16) or fp32"
            )


def check_half_precision_device(args):
    """Refuse fp16 training on a machine without a CUDA GPU, before any data is loaded.

    fairseq 0.12's half-precision trainer needs CUDA: without ``--cpu`` it stops with torch's
    bare "Torch not compiled with CUDA enabled" after loading the data and building the model;
    with ``--cpu`` its fp16 optimizer files the fp32 master weights under the current CUDA
    device, and its loss scaler makes a CUDA tensor at the first gradient overflow. The
    package does not patch that; the test suite runs those GPU code paths on a CPU through a
    shim of its own (tests/gpu_on_cpu), which marks fairseq's trainer, and only then is
    ``--cpu`` with fp16 let through. ``--amp`` on a CPU is fp32 with its scaler off and runs.

    Only checked inside ``fairseq-train``: a model trained with --fp16 on a GPU keeps that
    flag in its checkpoint and must still load for ``fairseq-generate`` on a CPU.
    """
    half = [flag for flag, name in (("--fp16", "fp16"), ("--memory-efficient-fp16",
            "memory_efficient_fp16"), ("--amp", "amp")) if getattr(args, name, False)]  # fmt: skip
    if not half or "fairseq_cli.train" not in sys.modules or torch.cuda.is_available():
        return
    cpu = getattr(args, "cpu", False)
    if cpu:
        half = [flag for flag in half if flag != "--amp"]
        from fairseq.trainer import Trainer

        if not half or getattr(Trainer, "gpu_code_on_cpu_shim", False):
            return
        raise ValueError(
            f"{' and '.join(half)} with --cpu: fairseq 0.12's half-precision training needs "
            "CUDA (its fp16 optimizer keys the fp32 master weights by CUDA device, and a "
            "gradient overflow makes a CUDA tensor), and torch sees no GPU here; drop "
            f"{' and '.join(half)} to train in fp32 on the CPU"
        )
    raise ValueError(
        f"{' and '.join(half)} need(s) a CUDA GPU, and torch sees none on this machine "
        f"(torch.cuda.is_available() is False); drop {' and '.join(half)} and add --cpu to "
        "train in fp32 on the CPU"
    )


def check_omega_shapes(model, state_dict):
    """Before loading a checkpoint, compare its omegas with the model's and name the flag
    that differs (fairseq would only say that "the architectures" do not match)."""
    wrappers = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.")
    own = {}
    for key, module in _omega_residuals(model):
        for wrapper in wrappers:
            key = key.replace(wrapper, "")
        own[key] = module
    theirs = {k: v for k, v in state_dict.items() if k.endswith("_residual.omega")}
    if own and not theirs:
        raise ValueError(
            "the checkpoint has no Admin omegas: it was not trained with --admin-init or "
            "--deepnet; load it with the flags it was trained with (see its cfg), or start a "
            "new run in another --save-dir"
        )
    if theirs and not own:
        raise ValueError(
            "the checkpoint holds Admin/DeepNet omegas but this model has none; add the "
            "--admin-init (or --deepnet) flags it was trained with"
        )
    for key, module in own.items():
        if key not in theirs:
            raise ValueError(f"the checkpoint lacks {key}: it has another depth or layout "
                             "(--encoder-layers/--decoder-layers/--no-cross-attention)")  # fmt: skip
        want, got = module.omega.numel(), theirs[key].numel()  # a scalar omega has one element
        if want == got:
            continue
        if got > 1 and want == 1:
            hint = (f"the checkpoint has per-dimension omegas (size {got}, trained with "
                    "--admin-as-parameter or --admin-profile); add --admin-as-parameter")  # fmt: skip
        elif want > 1 and got == 1:
            hint = ("the checkpoint has one scalar omega per sub-layer (trained without "
                    "--admin-as-parameter); drop --admin-as-parameter")  # fmt: skip
        else:
            hint = (f"the checkpoint's omega has size {got} but this model's {want}: "
                    "the model width (--encoder-embed-dim/--decoder-embed-dim) differs")  # fmt: skip
        raise ValueError(f"{key}: {hint}")
