"""``transformer_admin``: fairseq's ``transformer`` with Admin residuals behind ``--admin-init``.

Without ``--admin-init`` (or ``--deepnet``) the model builds fairseq's own encoder and
decoder, so it is exactly fairseq's ``transformer`` (same parameters for the same seed, same
outputs, same state dict); fairseq's ``--encoder-normalize-before``/``--decoder-normalize-
before`` give Pre-LN. The variants, all Post-LN ``LN(omega * x + f(x))``:

* ``--admin-init``: plug-in-and-play Admin, omega from
  :func:`admin_fairseq.core.calculate_init`, counted per stack (encoder ``N = 2L``,
  decoder ``N = 3L``); a scalar buffer, or a trainable vector with ``--admin-as-parameter``.
* ``--admin-init --admin-profile``: the original Admin. omega follows the variance
  recursion of :class:`~admin_fairseq.modules.transformer_layer.OmegaProfiler` on the first
  training batch (dropout on) before the first update, is broadcast from rank 0 so that
  every worker agrees, and is then trained as per-dimension vectors. A flag buffer in the
  model records that it was done, so resuming never profiles again.
  ``--admin-profile-from`` takes the profile of an earlier checkpoint or JSON file instead;
  ``--admin-profile-to FILE`` profiles, writes the omegas to FILE and stops before the first
  update (the original two-step procedure, needed under ``--fp16``'s fp32 master weights).
* ``--deepnet``: DeepNorm, a fixed ``alpha`` on the skip branch and ``beta``-scaled initial
  weights of v_proj, out_proj (cross-attention included), fc1 and fc2.
"""

import json
import logging
import sys
from pathlib import Path

import torch

from fairseq.distributed import fsdp_wrap
from fairseq.models import register_model, register_model_architecture
from fairseq.models.transformer import (
    TransformerConfig,
    TransformerDecoderBase,
    TransformerEncoderBase,
    TransformerModel,
)
from fairseq.models.transformer import transformer_legacy as fairseq_archs
from fairseq.modules.checkpoint_activations import checkpoint_wrapper

from admin_fairseq import atomic, monitor
from admin_fairseq.core.deepnorm import encoder_decoder_constants
from admin_fairseq.core.omega import OUTPUT_CHANGE_SCALES, calculate_init, canonical_scale
from admin_fairseq.modules.transformer_layer import (
    AdminDecoderLayer,
    AdminEncoderLayer,
    OmegaProfiler,
)

logger = logging.getLogger(__name__)

DEFAULT_OUTPUT_CHANGE_SCALE = "O(logn)"


def _residual_plan(cfg, side, sublayers_per_layer):
    """``(initial omega, as_parameter, DeepNorm beta or None)`` for one stack."""
    layers = cfg.encoder.layers if side == "encoder" else cfg.decoder.layers
    if cfg.deepnet:
        constants = encoder_decoder_constants(cfg.encoder.layers, cfg.decoder.layers)
        stack = constants[0] if side == "encoder" else constants[1]
        return stack.alpha, False, stack.beta
    if cfg.admin_profile:  # a placeholder until the first training batch is profiled
        return 1.0, True, None
    omega = calculate_init(sublayers_per_layer * layers, cfg.admin_output_change_scale)
    return omega, cfg.admin_as_parameter, None


def _projection_weights(attn):
    """``(q, k, v)`` weight tensors of an attention module: its own projections (fairseq),
    or the three slices of a fused ``in_proj_weight`` (other implementations)."""
    if getattr(attn, "v_proj", None) is not None:
        return attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight
    dim = attn.in_proj_weight.shape[0] // 3
    fused = attn.in_proj_weight
    return fused[:dim], fused[dim : 2 * dim], fused[2 * dim :]


@torch.no_grad()
def apply_deepnorm_init(layer, beta):
    """DeepNet's initialisation (Wang et al., 2022, Algorithm 1): the weights of v_proj,
    out_proj (self- and cross-attention), fc1 and fc2 are drawn from Xavier-normal with gain
    beta, those of q_proj and k_proj from Xavier-normal with gain 1. Biases keep fairseq's
    initialisation (the paper's algorithm sets weights only); docs/published-settings.md
    says why this and not torchscale's "multiply the default weights and biases by beta"."""
    for attn in (layer.self_attn, getattr(layer, "encoder_attn", None)):
        if attn is None:
            continue
        q, k, v = _projection_weights(attn)
        torch.nn.init.xavier_normal_(q, gain=1.0)
        torch.nn.init.xavier_normal_(k, gain=1.0)
        torch.nn.init.xavier_normal_(v, gain=beta)
        torch.nn.init.xavier_normal_(attn.out_proj.weight, gain=beta)
    torch.nn.init.xavier_normal_(layer.fc1.weight, gain=beta)
    torch.nn.init.xavier_normal_(layer.fc2.weight, gain=beta)


def _wrap_like_fairseq(layer, cfg):
    """Apply the activation-checkpointing and FSDP wrapping fairseq gives its own layers."""
    checkpoint = cfg.checkpoint_activations
    if checkpoint:
        layer = checkpoint_wrapper(layer, offload_to_cpu=cfg.offload_activations)
    # fairseq: a checkpointed layer is always FSDP-wrapped, whatever its size
    min_params_to_wrap = cfg.min_params_to_wrap if not checkpoint else 0
    return fsdp_wrap(layer, min_num_params=min_params_to_wrap)


class AdminTransformerEncoder(TransformerEncoderBase):
    """fairseq's encoder built from :class:`AdminEncoderLayer` (N = 2 x layers)."""

    def build_encoder_layer(self, cfg):
        omega, as_parameter, beta = _residual_plan(cfg, "encoder", 2)
        layer = AdminEncoderLayer(cfg, omega, as_parameter=as_parameter, return_fc=self.return_fc)
        if beta is not None:
            apply_deepnorm_init(layer, beta)
        return _wrap_like_fairseq(layer, cfg)


class AdminTransformerDecoder(TransformerDecoderBase):
    """fairseq's decoder built from :class:`AdminDecoderLayer` (N = 3 x layers, or 2 x
    layers without cross-attention)."""

    def build_decoder_layer(self, cfg, no_encoder_attn=False):
        omega, as_parameter, beta = _residual_plan(cfg, "decoder", 2 if no_encoder_attn else 3)
        layer = AdminDecoderLayer(
            cfg, omega, as_parameter=as_parameter, no_encoder_attn=no_encoder_attn
        )
        if beta is not None:
            apply_deepnorm_init(layer, beta)
        return _wrap_like_fairseq(layer, cfg)


def check_admin_args(args):
    """Validate the Admin/DeepNet flags against the rest of the configuration, in one
    place. Raises ``ValueError`` naming the flags at fault; normalises the output-change
    scale's spelling (``default`` -> ``O(logn)``)."""
    args.admin_output_change_scale = canonical_scale(
        args.admin_output_change_scale, "--admin-output-change-scale"
    )
    if (args.admin_profile_from or args.admin_profile_to) and not args.admin_profile:
        args.admin_profile = True  # a given or written profile is the profiled variant
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
            ("--admin-output-change-scale", args.admin_output_change_scale, DEFAULT_OUTPUT_CHANGE_SCALE),
            ("--admin-profile/--admin-profile-from/--admin-profile-to", args.admin_profile, False),
        ):  # fmt: skip
            if value != default:
                raise ValueError(
                    f"{flag} has no effect without --admin-init; add --admin-init or drop {flag}"
                )
    if getattr(args, "admin_omega_fp32", False) and not (args.admin_as_parameter or args.admin_profile):
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
    profiles_in_training = args.admin_profile and not given
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
    if args.admin_profile and getattr(args, "ddp_backend", None) == "fully_sharded":
        raise ValueError(
            "--admin-profile does not support --ddp-backend fully_sharded (the profile is "
            "taken and broadcast on unsharded layers); use another --ddp-backend"
        )
    if args.admin_profile and args.admin_output_change_scale != DEFAULT_OUTPUT_CHANGE_SCALE:
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


def _omega_residuals(model):
    """[(state-dict key, OmegaResidual)] of every sub-layer, in stack order."""
    return [
        (name + ".omega", module)
        for name, module in model.named_modules()
        if name.endswith("_residual") and hasattr(module, "omega")
    ]


def load_omega_profile(model, path):
    """Set the model's omegas from an earlier profile: a fairseq checkpoint of a model of
    the same shape, or a JSON file ``{"encoder": [...], "decoder": [...]}`` with one value
    (or one vector) per sub-layer in order. Raises ``ValueError`` on any mismatch."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"--admin-profile-from: {path} does not exist")
    residuals = _omega_residuals(model)
    if path.suffix == ".json":
        try:
            profile = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(profile, dict):
                raise ValueError("not a JSON object")
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise ValueError(f"--admin-profile-from: {path} is not a JSON profile "
                             f"{{\"encoder\": [...], \"decoder\": [...]}} ({err})") from None  # fmt: skip
        values = {}
        for side in ("encoder", "decoder"):
            keys = [k for k, _ in residuals if k.startswith(side + ".")]
            given = profile.get(side, [])
            if not isinstance(given, list):
                raise ValueError(f"--admin-profile-from: {path}: {side} must be a list of omegas")
            if len(given) != len(keys):
                raise ValueError(
                    f"--admin-profile-from: {path} has {len(given)} {side} omegas, the model "
                    f"has {len(keys)} {side} sub-layers"
                )
            try:
                values.update({k: torch.as_tensor(v, dtype=torch.float32) for k, v in zip(keys, given)})
            except (TypeError, ValueError, RuntimeError) as err:
                raise ValueError(f"--admin-profile-from: {path}: a {side} omega is not a number or "
                                 f"a list of numbers ({err})") from None  # fmt: skip
    else:
        from admin_fairseq.checkpoints import CheckpointError, read

        try:
            state = read(path)
        except CheckpointError as err:
            raise ValueError(f"--admin-profile-from: {err}") from None
        state = state.get("model", state)
        values = {k: state[k] for k, _ in residuals if k in state}
        missing = [k for k, _ in residuals if k not in values]
        if missing:
            raise ValueError(
                f"--admin-profile-from: {path} has no omega for {len(missing)} of the model's "
                f"{len(residuals)} sub-layers (first missing: {missing[0]}); it must come from "
                "a transformer_admin model of the same depth"
            )
    with torch.no_grad():
        for key, module in residuals:
            value = torch.as_tensor(values[key]).float().reshape(-1)
            if not torch.isfinite(value).all() or (value <= 0).any():
                raise ValueError(f"--admin-profile-from: {key} in {path} holds an omega that is not a "
                                 "finite positive number (NaN, infinite, zero or negative)")  # fmt: skip
            if value.numel() not in (1, module.omega.numel()):
                raise ValueError(
                    f"--admin-profile-from: {key} in {path} is a vector of size "
                    f"{value.numel()}, the model's is {module.omega.numel()} (its embed_dim)"
                )
            module.omega.copy_(value.expand_as(module.omega))


@register_model("transformer_admin")
class AdminTransformerModel(TransformerModel):
    """fairseq's ``transformer`` with Admin (Liu et al., 2020) behind ``--admin-init``."""

    @classmethod
    def add_args(cls, parser):
        super().add_args(parser)
        # No defaults here: they live in the architecture functions (fairseq convention),
        # so that checkpoints written before a flag existed still load.
        parser.add_argument(
            "--admin-init",
            action="store_true",
            help="rescale every Post-LN residual as LN(omega * x + f(x)) with Admin's "
            "omega; without it the model is exactly fairseq's transformer",
        )
        parser.add_argument(
            "--admin-output-change-scale",
            choices=OUTPUT_CHANGE_SCALES + ("default",),
            help="how the output change grows with depth, which sets omega: O(logn) "
            "(default; 'default' is an alias), O(1) (more stable), O(n) (omega = 1, "
            "vanilla Post-LN)",
        )
        parser.add_argument(
            "--admin-as-parameter",
            action="store_true",
            help="make each omega a trainable vector of size embed_dim (as in the "
            "published recipes) instead of a fixed scalar buffer",
        )
        parser.add_argument(
            "--admin-profile",
            action="store_true",
            help="with --admin-init: the original, profiled Admin; omega follows the "
            "variance recursion on the first training batch, then trains as vectors",
        )
        parser.add_argument(
            "--admin-profile-from",
            metavar="PATH",
            help="with --admin-init: take the profiled omegas from an earlier checkpoint "
            "(.pt) or JSON file instead of profiling (implies --admin-profile)",
        )
        parser.add_argument(
            "--admin-profile-to",
            metavar="FILE",
            help="with --admin-init: profile the first training batch, write the omegas to "
            "FILE (JSON, for --admin-profile-from) and stop before the first update",
        )
        parser.add_argument(
            "--bf16-autocast",
            action="store_true",
            help="compute in bfloat16 through torch.autocast: weights, gradients, optimizer "
            "state and checkpoints stay fp32, and no loss scaler is needed (GPUs with bf16, "
            "Ampere and newer, and CPUs); fairseq 0.12's own --bf16 runs on TPUs only",
        )
        parser.add_argument(
            "--admin-omega-fp32",
            action="store_true",
            help="with trainable omegas under --fp16/--memory-efficient-fp16: keep the omegas "
            "in fp32 while the rest of the model is fp16, so that small updates are not lost "
            "to fp16 rounding (off by default: the published recipes' behaviour)",
        )
        parser.add_argument(
            "--admin-monitor-interval",
            type=int,
            metavar="N",
            help="every N updates, record per layer the branch's share of the "
            "variance before each LayerNorm, the omegas, the gradient norm and the output change "
            "the update caused on a fixed batch, in fairseq's log and TensorBoard, and warn when "
            "they leave their early range (0: off, the default; "
            f"{monitor.DEFAULT_INTERVAL} is a good start)",
        )
        parser.add_argument(
            "--admin-monitor-factor",
            type=float,
            metavar="F",
            help="with --admin-monitor-interval: warn when the output change per update or a "
            "branch share leaves the range it held early in the run by more than F times "
            f"(default {monitor.DEFAULT_FACTOR:g})",
        )
        parser.add_argument(
            "--admin-monitor-stop",
            action="store_true",
            help="with --admin-monitor-interval: stop the run on the monitor's first warning "
            f"(exit status {monitor.EXIT_UNSTABLE}) instead of going on",
        )
        parser.add_argument(
            "--deepnet",
            action="store_true",
            help="DeepNet/DeepNorm baseline: alpha-scaled skip branch, Xavier-normal "
            "initial weights of gain beta (v_proj, out_proj, fc1, fc2) and 1 (q_proj, "
            "k_proj); not with --admin-init",
        )

    def __init__(self, args, encoder, decoder):
        super().__init__(args, encoder, decoder)
        if getattr(args, "admin_profile", False):
            # 0 until the omegas are profiled (or loaded); saved with the checkpoint
            self.register_buffer("admin_omega_profiled", torch.zeros(()))
        self.admin_profile_to = getattr(args, "admin_profile_to", None)
        self.bf16_autocast = bool(getattr(args, "bf16_autocast", False))
        self.admin_omega_fp32 = bool(getattr(args, "admin_omega_fp32", False))
        interval = getattr(args, "admin_monitor_interval", 0) or 0
        if interval and "fairseq_cli.train" in sys.modules:  # training only, not generate
            monitor.install()  # fairseq's trainer runs the monitor from here on (once)
            # a plain attribute (not a module): nothing of it goes into the state dict
            self.admin_monitor = monitor.StabilityMonitor(
                self, interval, args.admin_monitor_factor, args.admin_monitor_stop
            )

    @classmethod
    def build_model(cls, args, task):
        base_architecture(args)  # fill in flags missing from older checkpoints
        check_admin_args(args)
        check_half_precision_device(args)
        check_bf16(args)
        monitor.check_args(args)
        model = super().build_model(args, task)
        if args.admin_profile_from:
            load_omega_profile(model, args.admin_profile_from)
            model.admin_omega_profiled.fill_(1)
            logger.info(f"Admin omegas loaded from {args.admin_profile_from}")
            # The omegas now live in the model and its checkpoints: a later load (resume,
            # fairseq-generate) must not need the file, so keep its name for the record only.
            args.admin_profile_source = args.admin_profile_from
            args.admin_profile_from = None
        return model

    @classmethod
    def build_encoder(cls, args, src_dict, embed_tokens):
        cfg = TransformerConfig.from_namespace(args)
        if not (cfg.admin_init or cfg.deepnet):
            return super().build_encoder(args, src_dict, embed_tokens)
        return AdminTransformerEncoder(cfg, src_dict, embed_tokens)

    @classmethod
    def build_decoder(cls, args, tgt_dict, embed_tokens):
        cfg = TransformerConfig.from_namespace(args)
        if not (cfg.admin_init or cfg.deepnet):
            return super().build_decoder(args, tgt_dict, embed_tokens)
        return AdminTransformerDecoder(
            cfg, tgt_dict, embed_tokens, no_encoder_attn=cfg.no_cross_attention
        )

    def half(self):
        """fairseq's fp16 trainers (and ``--fp16`` in fairseq-generate) call this; with
        ``--admin-omega-fp32`` the trainable omegas stay fp32 (each residual casts its omega
        to the stream's dtype when it computes, so the forward is the fp16 one)."""
        super().half()
        if self.admin_omega_fp32:
            for _, module in _omega_residuals(self):
                if isinstance(module.omega, torch.nn.Parameter):
                    module.omega.data = module.omega.data.float()
        return self

    def load_state_dict(self, state_dict, strict=True, model_cfg=None, args=None):
        if strict:
            check_omega_shapes(self, state_dict)
        return super().load_state_dict(state_dict, strict=strict, model_cfg=model_cfg, args=args)

    def forward(self, src_tokens, src_lengths, prev_output_tokens, return_all_hiddens: bool = True,
                features_only: bool = False, alignment_layer=None, alignment_heads=None):  # fmt: skip
        if self.training and getattr(self, "admin_omega_profiled", None) is not None:
            if not self.admin_omega_profiled.item():
                self.profile_omegas(src_tokens, src_lengths, prev_output_tokens)
        # --bf16-autocast: training and validation compute in bf16 (the weights stay fp32;
        # the criterion takes the log-softmax in fp32); beam search, which calls the encoder
        # and decoder directly, stays in the weights' precision
        with torch.autocast(src_tokens.device.type, dtype=torch.bfloat16, enabled=self.bf16_autocast):
            return super().forward(src_tokens, src_lengths, prev_output_tokens, return_all_hiddens,
                                   features_only, alignment_layer, alignment_heads)  # fmt: skip

    @torch.no_grad()
    def profile_omegas(self, src_tokens, src_lengths, prev_output_tokens):
        """Run the original Admin's profiling on this batch (in the current train/eval mode),
        make every worker use rank 0's result, and mark the model as profiled."""
        profilers = {}
        for side, stack in (("encoder", self.encoder), ("decoder", self.decoder)):
            profilers[side] = OmegaProfiler()
            for layer in stack.layers:
                layer.omega_profiler = profilers[side]
        try:
            super().forward(src_tokens, src_lengths, prev_output_tokens)
        finally:
            for stack in (self.encoder, self.decoder):
                for layer in stack.layers:
                    layer.omega_profiler = None
        for side, stack in (("encoder", self.encoder), ("decoder", self.decoder)):
            expected = len(_omega_residuals(stack))
            if len(profilers[side].values) != expected:
                raise RuntimeError(
                    f"admin_fairseq: profiling saw {len(profilers[side].values)} of the "
                    f"{expected} {side} sub-layers; the layers are wrapped in a way it does "
                    "not support"
                )
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            if torch.distributed.get_world_size() > 1:
                for _, module in _omega_residuals(self):
                    torch.distributed.broadcast(module.omega.data, src=0)
        self.admin_omega_profiled.fill_(1)
        for side, profiler in profilers.items():
            values = profiler.values
            logger.info(
                f"Admin profiled {len(values)} {side} omegas on rank 0's first batch: "
                f"{values[0]:.3f}, {values[1]:.3f}, ... {values[-1]:.3f}"
            )
        if self.admin_profile_to:
            self.write_profile(self.admin_profile_to)
            logger.info(f"Admin profile written to {self.admin_profile_to}; stopping before "
                        "the first update (--admin-profile-to)")  # fmt: skip
            raise SystemExit(0)

    def write_profile(self, path):
        """Write the omegas as ``{"encoder": [...], "decoder": [...]}``, one value per
        sub-layer in order (what :func:`load_omega_profile` reads); atomically."""
        profile = {
            side: [module.omega.detach().float().reshape(-1)[0].item()
                   for _, module in _omega_residuals(stack)]
            for side, stack in (("encoder", self.encoder), ("decoder", self.decoder))
        }  # fmt: skip
        atomic.write_text(path, json.dumps(profile, indent=1) + "\n")


# ---------------------------------------------------------------------------------------
# Architectures. Each preset sets only what differs from its parent, then calls it; the
# shapes mirror fairseq's presets of the same name. Admin stays off unless --admin-init is
# given, so every preset can be trained as Post-LN, Pre-LN or Admin by changing flags only.
# ---------------------------------------------------------------------------------------


def _admin_defaults(args):
    args.admin_init = getattr(args, "admin_init", False)
    args.admin_output_change_scale = getattr(
        args, "admin_output_change_scale", DEFAULT_OUTPUT_CHANGE_SCALE
    )
    args.admin_as_parameter = getattr(args, "admin_as_parameter", False)
    args.admin_profile = getattr(args, "admin_profile", False)
    args.admin_profile_from = getattr(args, "admin_profile_from", None)
    args.admin_profile_to = getattr(args, "admin_profile_to", None)
    args.deepnet = getattr(args, "deepnet", False)
    args.bf16_autocast = getattr(args, "bf16_autocast", False)
    args.admin_omega_fp32 = getattr(args, "admin_omega_fp32", False)
    args.admin_monitor_interval = getattr(args, "admin_monitor_interval", 0)
    args.admin_monitor_factor = getattr(args, "admin_monitor_factor", monitor.DEFAULT_FACTOR)
    args.admin_monitor_stop = getattr(args, "admin_monitor_stop", False)


@register_model_architecture("transformer_admin", "transformer_admin")
def base_architecture(args):
    _admin_defaults(args)
    fairseq_archs.base_architecture(args)


@register_model_architecture("transformer_admin", "transformer_admin_tiny")
def transformer_admin_tiny(args):
    _admin_defaults(args)
    fairseq_archs.tiny_architecture(args)


@register_model_architecture("transformer_admin", "transformer_admin_iwslt_de_en")
def transformer_admin_iwslt_de_en(args):
    _admin_defaults(args)
    fairseq_archs.transformer_iwslt_de_en(args)


@register_model_architecture("transformer_admin", "transformer_admin_wmt_en_de")
def transformer_admin_wmt_en_de(args):
    _admin_defaults(args)
    fairseq_archs.transformer_wmt_en_de(args)


@register_model_architecture("transformer_admin", "transformer_admin_vaswani_wmt_en_de_big")
def transformer_admin_vaswani_wmt_en_de_big(args):
    _admin_defaults(args)
    fairseq_archs.transformer_vaswani_wmt_en_de_big(args)


@register_model_architecture("transformer_admin", "transformer_admin_vaswani_wmt_en_fr_big")
def transformer_admin_vaswani_wmt_en_fr_big(args):
    _admin_defaults(args)
    fairseq_archs.transformer_vaswani_wmt_en_fr_big(args)


def _deep(encoder_layers, decoder_layers):
    """A base-width (512/2048/8 heads) preset with the given depth, as in the Admin papers."""

    def architecture(args):
        args.encoder_layers = getattr(args, "encoder_layers", encoder_layers)
        args.decoder_layers = getattr(args, "decoder_layers", decoder_layers)
        transformer_admin_wmt_en_de(args)

    architecture.__name__ = f"transformer_admin_{encoder_layers}_{decoder_layers}"
    architecture.__doc__ = (
        f"{encoder_layers}L-{decoder_layers}L Transformer of base width (Admin paper shapes)."
    )
    return register_model_architecture("transformer_admin", architecture.__name__)(architecture)


transformer_admin_18_18 = _deep(18, 18)  # Admin paper, WMT'14 En-De
transformer_admin_60_12 = _deep(60, 12)  # Very Deep Transformers, WMT'14 En-Fr/En-De
transformer_admin_100_100 = _deep(100, 100)  # admin-torch, WMT'14/'17 En-De
