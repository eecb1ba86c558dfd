"""Read ``fairseq-generate`` output and score it with sacreBLEU.

fairseq prints hypotheses out of order and, unless ``--required-batch-size-multiple 1`` is
given, may silently drop the last partial batch; :func:`read_hypotheses` restores the order
and refuses output that does not cover every test sentence.
"""

import math


def read_hypotheses(lines, num_sentences, prefix="D"):
    """Return the hypotheses of ``fairseq-generate`` output in sentence order.

    ``prefix`` is ``D`` for the detokenized (sentencepiece-decoded) text, ``H`` for the
    tokenized one. Raises ``ValueError`` if any sentence id in ``range(num_sentences)`` is
    missing or repeated.
    """
    hyps = {}
    tag = prefix + "-"
    for line in lines:
        if not line.startswith(tag):
            continue
        fields = line.rstrip("\n").split("\t")
        sent_id = int(fields[0][len(tag):])
        if sent_id in hyps:
            raise ValueError(f"sentence {sent_id} appears twice in the generate output")
        hyps[sent_id] = fields[2] if len(fields) > 2 else ""
    missing = [i for i in range(num_sentences) if i not in hyps]
    if missing:
        raise ValueError(
            f"fairseq-generate translated {len(hyps)} of {num_sentences} sentences (missing "
            f"ids {missing[:10]}{' ...' if len(missing) > 10 else ''}); pass "
            "--required-batch-size-multiple 1 so that the last partial batch is kept"
        )
    extra = sorted(set(hyps) - set(range(num_sentences)))
    if extra:
        raise ValueError(f"generate output has ids beyond the {num_sentences} references: {extra[:10]}")
    return [hyps[i] for i in range(num_sentences)]


def score(hypotheses, references):
    """Corpus BLEU and chrF of detokenized text, with sacreBLEU's signatures."""
    import sacrebleu

    if len(hypotheses) != len(references):
        raise ValueError(
            f"{len(hypotheses)} hypotheses but {len(references)} references; they must align"
        )
    bleu = sacrebleu.metrics.BLEU()
    chrf = sacrebleu.metrics.CHRF()
    bleu_score = bleu.corpus_score(hypotheses, [references])
    chrf_score = chrf.corpus_score(hypotheses, [references])
    result = {
        "bleu": bleu_score.score,
        "bleu_signature": str(bleu.get_signature()),
        "chrf": chrf_score.score,
        "chrf_signature": str(chrf.get_signature()),
        "sentences": len(hypotheses),
    }
    for key in ("bleu", "chrf"):
        if not math.isfinite(result[key]):
            raise ValueError(f"sacreBLEU returned a non-finite {key}: {result[key]}")
    return result
