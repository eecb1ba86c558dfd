"""The published recipes, setting by setting: which flags each method adds, the model sizes,
each recipe's optimizer and schedule, and the published batch settings with the recipe
they bring. docs/published-settings.md lists them with their sources (tests/test_docs.py
holds the page to what the train step builds from these tables)."""

#: method -> fairseq-train flags (on the transformer_admin model; without --admin-init it is
#: fairseq's Post-LN transformer, bit for bit).
METHODS = {
    "post-ln": [],
    "pre-ln": ["--encoder-normalize-before", "--decoder-normalize-before"],
    # The published Admin recipes train one omega per dimension (initialised to the O(logn) value).
    "admin": ["--admin-init", "--admin-as-parameter"],
    # admin-torch's default: one fixed scalar omega per stack.
    "admin-scalar": ["--admin-init"],
    # Original Admin: omegas profiled on the first training batch (Transformer-Clinic).
    "admin-profiled": ["--admin-init", "--admin-profile"],
    "deepnet": ["--deepnet"],
}

#: model width -> (architecture preset, flags). Depth is always set with --encoder/decoder-layers.
SIZES = {
    "base": ("transformer_admin_wmt_en_de", []),  # 512/2048/8 heads: the Admin papers' models
    "big": ("transformer_admin_vaswani_wmt_en_de_big", []),  # 1024/4096/16 heads
    "iwslt": ("transformer_admin_iwslt_de_en", []),  # 512/1024/4 heads: the IWSLT'14 model
    "cpu": ("transformer_admin", ["--encoder-embed-dim", "128", "--decoder-embed-dim", "128",
                                  "--encoder-ffn-embed-dim", "512", "--decoder-ffn-embed-dim", "512",
                                  "--encoder-attention-heads", "4", "--decoder-attention-heads", "4"]),
}  # fmt: skip

ADAM = ["--optimizer", "adam", "--adam-betas", "(0.9, 0.98)"]
RADAM = ["--optimizer", "radam", "--adam-betas", "(0.9, 0.98)"]
ADMIN_TORCH_FP16 = ["--memory-efficient-fp16", "--fp16-scale-window", "256", "--threshold-loss-scale", "0.0625"]
CLINIC_FP16 = ["--fp16", "--fp16-scale-window", "256", "--threshold-loss-scale", "0.03125"]

#: The published hyper-parameter sets, each with its source; docs/published-settings.md has
#: them setting by setting, and a test keeps that page equal to what the dry run prints.
#: ``window`` is the published checkpoint-averaging window (first and last epoch): training
#: stops at its last epoch and keeps exactly its epochs.
RECIPES = {
    "regular": {  # admin-torch example/train_wmt_en-de.sh and eval_wmt_en-de.sh ("8x4096")
        "optimizer": ADAM, "lr": "1e-3", "warmup": "8000", "weight_decay": "0.0",
        "dropout": "0.1", "attention_dropout": "0.1", "activation_dropout": "0.1",
        "stop": [], "window": (36, 45), "fp16": ADMIN_TORCH_FP16, "seed": 1111,
    },
    "huge": {  # admin-torch example/train_wmt_en-de_huge_batch.sh ("128x4096")
        "optimizer": ADAM, "lr": "1.5e-3", "warmup": "4000", "weight_decay": "1e-4",
        "dropout": "0.4", "attention_dropout": "0.0", "activation_dropout": "0.0",
        "stop": ["--max-update", "100000"], "window": (36, 45), "fp16": ADMIN_TORCH_FP16,
        "seed": 1111,
    },
    "clinic": {  # Transformer-Clinic nmt-experiments/wmt14_en-fr.md and eval_wmt_en-fr.sh
        "optimizer": RADAM, "lr": "7e-4", "warmup": "8000", "weight_decay": "0.0",
        "dropout": "0.1", "attention_dropout": "0.1", "activation_dropout": "0.1",
        "stop": [], "window": (41, 50), "fp16": CLINIC_FP16, "seed": 1111,
    },
    "iwslt": {  # Transformer-Clinic nmt-experiments/iwslt14_de-en.md and eval_iwslt_de-en.sh
        "optimizer": RADAM, "lr": "7e-4", "warmup": "6000", "weight_decay": "1e-4",
        "dropout": "0.3", "attention_dropout": "0.1", "activation_dropout": "0.1",
        "stop": ["--max-update", "100000"], "window": (81, 90), "fp16": CLINIC_FP16, "seed": 1111,
        "size": "iwslt",
    },
}  # fmt: skip
#: recipe -> updates between interval checkpoints (not published: the published runs saved at
#: epoch ends only, and an epoch of the large-batch settings is hours of a deep model). They
#: bound the work a preemption or a crash loses; each one also validates, as fairseq does at
#: every mid-epoch save. The train step's --save-every changes it (0: epoch ends only).
SAVE_EVERY = {"regular": 2000, "huge": 100, "clinic": 100, "iwslt": 2000}
BIG_HUGE_LR = "7e-4"  # the big model at 128x4096 (admin-torch train_big_wmt_en-de_huge_batch.sh)
#: published batch -> (recipe, per-GPU max-tokens of the published runs)
PUBLISHED_BATCHES = {
    "8x4096": ("regular", 4096),  # 8 GPUs x 4096 x 1
    "128x4096": ("huge", 2048),  # 8 GPUs x 2048 x 32
    "80x8000": ("clinic", 8000),  # WMT'14 En-Fr 6L: 8 GPUs x 8000 x 10
    "256x5000": ("clinic", 5000),  # WMT'14 En-Fr 60L-12L: 16 GPUs x 5000 x 16
    "1x4096": ("iwslt", 4096),  # IWSLT'14 De-En: 1 GPU x 4096 x 1
}

COMMON = [
    "--share-all-embeddings", "--clip-norm", "0.0",
    "--lr-scheduler", "inverse_sqrt", "--warmup-init-lr", "1e-07",
    "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
]  # fmt: skip
