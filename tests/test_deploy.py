"""From a trained checkpoint to translations: the CTranslate2 conversion (admin_fairseq.ct2)
and the translate command (admin_fairseq.translate), against fairseq-generate."""

import io
import json
import re
import subprocess
import sys

import pytest

from admin_fairseq.ct2 import DeployError
from admin_fairseq.evaluation import score
from admin_fairseq.translate import read_lines, translate_lines

import shared_runs
from conftest import USER_DIR, generate_in_process, run_module

MODELS = list(shared_runs.DEPLOY_MODELS)  # the recipes' and the main job's embeddings: shared, sinusoidal positions
DECODING = ["--beam", "4", "--lenpen", "1", "--max-len-a", "0", "--max-len-b", "80"]  # no batch-dependent limit


def test_lines_are_read_as_utf8_with_the_line_named():
    assert read_lines(io.BytesIO(b"one\r\n\r\ntwo\n"), "in.txt") == ["one", "", "two"]
    with pytest.raises(DeployError, match=r"in.txt line 2 is not UTF-8 \(bytes b'caf\\xe9'"):
        read_lines(io.BytesIO(b"fine\ncaf\xe9\n"), "in.txt")


class _Reverser:
    """A stand-in model for the batching logic alone: pieces are characters, the
    'translation' reverses them; it records the batches it was given."""

    class pieces:
        encode = staticmethod(list)
        decode = staticmethod("".join)

    def __init__(self):
        self.batches = []

    def translate_batches(self, batches):
        for batch in batches:
            self.batches.append(batch)
            yield [p[::-1] for p in batch]


def test_order_and_empty_lines_are_kept_across_length_sorted_batches():
    lines = ["abcdef", "", "xy", "   ", "klmnopq", "z", "abc"]
    model = _Reverser()
    assert translate_lines(model, lines, batch_size=2) == ["fedcba", "", "yx", "", "qponmlk", "z", "cba"]
    assert [len(b) for b in model.batches] == [2, 2, 1]  # five non-empty lines
    assert [len(p) for b in model.batches for p in b] == [1, 2, 3, 6, 7]  # similar lengths together


def _generate(bible, checkpoint, cwd):
    """fairseq-generate's translations of the test set, detokenized, in test-set order
    (decoded in this process; the command in a fresh process is tests/test_export.py's and
    the README example's)."""
    import sentencepiece

    output = generate_in_process(bible["bin"], "--user-dir", USER_DIR, "--path", checkpoint, "--gen-subset", "test",
                                 *DECODING, "--batch-size", "16", "--required-batch-size-multiple", "1",
                                 cwd=cwd)  # fmt: skip
    hyps = dict(re.findall(r"^H-(\d+)\t\S+\t(.*)$", output, flags=re.M))
    processor = sentencepiece.SentencePieceProcessor(model_file=str(bible["raw"] / "spm.model"))
    return [processor.decode(hyps[str(i)].split()) for i in range(len(hyps))]


def _translate(model, source, *extra):
    return subprocess.run([sys.executable, "-m", "admin_fairseq.translate", "--model", str(model),
                           *DECODING, "--batch-size", "16", "--threads", "2", *extra],
                          input=source, capture_output=True, timeout=900)  # fmt: skip


def _convert(checkpoint, out, *extra):
    return subprocess.run([sys.executable, "-m", "admin_fairseq.ct2", "--checkpoint", str(checkpoint),
                           "--out", str(out), *extra], capture_output=True, text=True, timeout=900)  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("case", list(MODELS))
def test_ctranslate2_translates_as_fairseq_generate(bible, trained, tmp_path, case):
    checkpoint = trained(case)
    source = (bible["raw"] / "test.en").read_bytes()
    references = (bible["raw"] / "test.fr").read_text().splitlines()
    generated = _generate(bible, checkpoint, tmp_path)

    # the translate command on the checkpoint itself runs fairseq's beam search: the same lines
    own = _translate(checkpoint, source)
    assert own.returncode == 0, own.stderr.decode()[-3000:]
    assert own.stdout.decode().splitlines() == generated

    # the conversions and their translations run here (one start of Python for all of them;
    # the commands themselves as a user starts them: above and in the refusals' test)
    outputs = {}
    for quantization in ("float32", "int8"):
        folder = tmp_path / f"ct2-{quantization}"
        result = run_module("admin_fairseq.ct2", "--checkpoint", checkpoint, "--out", folder,
                            "--quantization", quantization)  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        assert {"model.bin", "config.json", "spm.model", "admin_fairseq.json"} <= {
            p.name for p in folder.iterdir()}
        record = json.loads((folder / "admin_fairseq.json").read_text())
        assert record["quantization"] == quantization and record["source_lang"] == "en"
        assert record["fold"]["added_parameters"] > 0  # untied embeddings, sinusoids as a table
        translated = run_module("admin_fairseq.translate", "--model", folder, *DECODING, "--batch-size", "16",
                                "--threads", "2", "--input", bible["raw"] / "test.en")  # fmt: skip
        assert translated.returncode == 0, translated.stderr[-3000:]
        outputs[quantization] = translated.stdout.splitlines()
        assert len(outputs[quantization]) == len(references)

    same = sum(a == b for a, b in zip(outputs["float32"], generated))
    print(f"{case}: float32 {same}/{len(generated)} lines identical to fairseq-generate")
    assert same >= len(generated) - 2, [(a, b) for a, b in zip(outputs["float32"], generated) if a != b]
    bleu = {q: score(h, references)["bleu"] for q, h in outputs.items()}
    bleu["fairseq"] = score(generated, references)["bleu"]
    print(f"{case}: BLEU {bleu}")
    assert abs(bleu["float32"] - bleu["fairseq"]) <= 0.3
    assert abs(bleu["int8"] - bleu["float32"]) <= 1.0  # the stated int8 distance (docs/deployment.md)


def _in_process(module, argv):
    """A command's main() run here (one fairseq import for all the refusals): its exit
    status and what it printed on stderr."""
    result = run_module(module, *argv)
    return result.returncode, result.stderr


@pytest.mark.slow
def test_refusals_name_the_problem_and_write_nothing(bible, trained, tmp_path):
    import torch

    checkpoint = trained("scalar omega")

    def convert(source, *extra):
        return _in_process("admin_fairseq.ct2", ["--checkpoint", source, "--out", tmp_path / "out", *extra])

    status, err = convert(checkpoint, "--data", tmp_path)
    assert status == 2 and f"no dictionary (dict.*.txt) in {tmp_path};" in err
    (tmp_path / "dict.en.txt").write_text("a 1\n")  # a folder with one side's dictionary only
    (tmp_path / "train.en-fr.en.idx").write_text("")
    status, err = convert(checkpoint, "--data", tmp_path)
    assert status == 2 and f"dictionary {tmp_path / 'dict.fr.txt'} not found" in err
    status, err = convert(checkpoint, "--spm", tmp_path / "none.model")
    assert status == 2 and "sentencepiece model" in err and "--spm" in err
    status, err = convert(tmp_path / "missing.pt")
    assert status == 2 and "missing.pt does not exist" in err
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    status, err = convert(tmp_path / "junk.pt")
    assert status == 2 and "not a readable PyTorch checkpoint" in err
    # what fairseq saves for an LSTM, as far as the command reads it (cfg.model)
    torch.save({"cfg": {"model": {"_name": "lstm", "arch": "lstm"}, "task": {"data": str(bible["bin"])}},
                "model": {}}, tmp_path / "lstm.pt")  # fmt: skip
    status, err = convert(tmp_path / "lstm.pt")
    assert status == 2 and "holds a 'lstm' model" in err
    status, err = convert(checkpoint, "--quantization", "int3")
    assert status == 2 and "--quantization" in err
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.*"))  # no temporary folder left behind

    folder = tmp_path / "ct2"
    assert _convert(checkpoint, folder).returncode == 0  # the command itself, as a user runs it
    status, err = _in_process("admin_fairseq.ct2", ["--checkpoint", checkpoint, "--out", folder])
    assert status == 2 and "exists; choose another --out or pass --force" in err

    (tmp_path / "hello.txt").write_text("hello\n")
    (tmp_path / "ckpt").mkdir()  # a training folder, not a converted model
    (tmp_path / "ckpt" / "checkpoint_last.pt").write_bytes(checkpoint.read_bytes())
    status, err = _in_process("admin_fairseq.translate",
                              ["--model", tmp_path / "ckpt", "--input", tmp_path / "hello.txt"])  # fmt: skip
    assert status == 2 and "is not a CTranslate2 model folder" in err
    status, err = _in_process("admin_fairseq.translate", ["--model", folder, "--input", tmp_path / "hello.txt",
                                               "--threads", "2", "--intra-threads", "3"])  # fmt: skip
    assert status == 2 and "--intra-threads 3 must be between 1 and --threads (2)" in err
    status, err = _in_process("admin_fairseq.translate", ["--model", checkpoint, "--input", tmp_path / "hello.txt",
                                               "--intra-threads", "2"])  # fmt: skip
    assert status == 2 and "--intra-threads applies to CTranslate2 model folders" in err
    result = _translate(folder, b"good\nbad \xff\xfe line\n")  # the command, on stdin
    assert result.returncode == 2 and b"<stdin> line 2 is not UTF-8" in result.stderr
    assert result.stdout == b""  # nothing translated, nothing printed
    (folder / "spm.model").unlink()
    status, err = _in_process("admin_fairseq.translate", ["--model", folder, "--input", tmp_path / "hello.txt"])
    assert status == 2 and "spm.model is missing from the model folder" in err


@pytest.mark.slow
def test_python_api_translates_as_the_command(bible, trained, tmp_path):
    """admin_fairseq.translate.load: a checkpoint or a CTranslate2 folder from Python gives
    the translate command's lines, for a list and for one string."""
    from admin_fairseq import ct2
    from admin_fairseq.translate import load

    checkpoint = trained("vector omega")
    source = (bible["raw"] / "test.en").read_text(encoding="utf-8").splitlines()[:12] + [""]
    folder = tmp_path / "ct2"
    ct2.convert(checkpoint, folder, log=lambda *_: None)
    options = dict(beam=4, lenpen=1.0, max_len_a=0, max_len_b=80, batch_size=16, threads=2)  # as _translate
    for model in (checkpoint, folder):
        command = _translate(model, ("\n".join(source) + "\n").encode())
        assert command.returncode == 0, command.stderr.decode()[-3000:]
        expected = command.stdout.decode().splitlines()
        translator = load(model, **options)
        assert translator.translate(source) == expected and expected[-1] == ""
        assert translator.translate(source[0]) == expected[0]
    with pytest.raises(DeployError, match=r"sentence 1 is not one line of text: 'b\\nc'"):
        translator.translate(["a", "b\nc"])
