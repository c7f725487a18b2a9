"""`tinygg build` from component directories (the real presets' code path) and `tinygg predict`."""

import json

import pytest
import torch
from PIL import Image

from tinygg.cli import build_parser, main


@pytest.fixture(scope="module")
def component_dirs(tmp_path_factory):
    """Tiny CLIP (full CLIP checkpoint, as on the hub), DINOv2 and Qwen2 causal LM + tokenizer, saved locally."""
    from transformers import CLIPConfig, CLIPModel, Dinov2Config, Dinov2Model, Qwen2Config, Qwen2ForCausalLM

    from tinygg.configuration import TINY
    from tinygg.tokenizer import build_tiny_tokenizer

    root = tmp_path_factory.mktemp("components")
    torch.manual_seed(1)
    clip = CLIPModel(CLIPConfig(vision_config=TINY["clip"], text_config=dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=100),
        projection_dim=16))
    clip.save_pretrained(root / "clip")
    Dinov2Model(Dinov2Config(**TINY["dino"])).save_pretrained(root / "dino")
    tok = build_tiny_tokenizer()
    llm = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok) - 2, **TINY["text"]))
    llm.save_pretrained(root / "llm")
    tok.save_pretrained(root / "llm")
    return {"clip": clip, "root": root}


def test_build_from_component_dirs_keeps_pretrained_weights(component_dirs, tmp_path, capsys):
    from transformers import AutoModelForImageTextToText, Dinov2Model, Qwen2ForCausalLM

    import tinygg  # noqa: F401

    root = component_dirs["root"]
    out = tmp_path / "stage0"
    assert main(["build", "--preset", "tiny", "--out", str(out), "--clip", str(root / "clip"),
                 "--dino", str(root / "dino"), "--llm", str(root / "llm")]) == 0
    assert "built tiny" in capsys.readouterr().out
    model = AutoModelForImageTextToText.from_pretrained(out)
    clip_ref = component_dirs["clip"].vision_model.state_dict()
    for k, v in model.model.vision_tower.clip.state_dict().items():
        assert torch.equal(v, clip_ref[k]), k
    dino_ref = Dinov2Model.from_pretrained(root / "dino").state_dict()
    for k, v in model.model.vision_tower.dino.state_dict().items():
        assert torch.equal(v, dino_ref[k]), k
    llm_ref = Qwen2ForCausalLM.from_pretrained(root / "llm").model.state_dict()
    for k, v in model.model.language_model.state_dict().items():
        if k == "embed_tokens.weight":  # resized for <image>/<object>: the old rows are kept
            assert torch.equal(v[: llm_ref[k].shape[0]], llm_ref[k])
        else:
            assert torch.equal(v, llm_ref[k]), k
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "tinygg" and cfg["image_token_id"] is not None
    assert (out / "model.safetensors").exists()


def test_build_tiny_then_predict_draws_boxes(tmp_path, photo, capsys):
    ckpt = tmp_path / "tiny"
    assert main(["build", "--preset", "tiny", "--out", str(ckpt)]) == 0
    img = tmp_path / "photo.png"
    photo.save(img)
    out_png = tmp_path / "pred.png"
    code = main(["predict", "--model", str(ckpt), "--image", str(img),
                 "--prompt", "Output the coordinate of the astronaut.", "--object", "10,10,200,300",
                 "--out", str(out_png), "--max-new-tokens", "8"])
    assert code == 0
    drawn = Image.open(out_png)
    assert drawn.size == photo.size
    assert list(drawn.getdata()) != list(photo.getdata())  # at least the <object> box is drawn


def test_predict_prompt_reads_backslash_n_as_a_newline():
    # as every --prompt of the CLI (eval rec / pope too): typed in a shell, \n arrives as backslash + n
    args = build_parser().parse_args(["predict", "--model", "m", "--image", "i",
                                      "--prompt", r"Output the coordinate of the cube.\n<image>"])
    assert args.prompt == "Output the coordinate of the cube.\n<image>"


def test_predict_errors_are_clear(tmp_path, tiny_checkpoint, capsys):
    bad = tmp_path / "x.jpg"
    bad.write_bytes(b"not a jpeg")
    assert main(["predict", "--model", str(tiny_checkpoint), "--image", str(bad), "--prompt", "hi"]) == 2
    assert "x.jpg: not a readable image" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["predict", "--model", "m", "--image", "i", "--prompt", "p", "--object", "1,2,3"])
    assert main(["build", "--preset", "9b", "--out", str(tmp_path / "o")]) == 2
    assert "unknown preset '9b'" in capsys.readouterr().err


def test_embed_std_redraws_the_tied_token_embeddings_only(component_dirs) -> None:
    """``embed_std`` redraws a random LLM's token embeddings (and so its tied output head) and nothing else;
    it refuses a pretrained LLM, whose embeddings it would destroy, and a non-positive std."""
    from tinygg.build import build_model

    base, _ = build_model("tiny")
    big, _ = build_model("tiny", embed_std=0.2)
    emb = big.get_input_embeddings().weight
    assert abs(float(emb.std()) - 0.2) < 0.01 and float(base.get_input_embeddings().weight.std()) < 0.05
    assert big.lm_head.weight is emb
    same = {k: v for k, v in base.state_dict().items() if "embed_tokens" not in k and "lm_head" not in k}
    assert all(torch.equal(v, big.state_dict()[k]) for k, v in same.items())
    with pytest.raises(ValueError, match="pretrained"):
        build_model("tiny", llm=str(component_dirs["root"] / "llm"), embed_std=0.2)
    with pytest.raises(ValueError, match="positive"):
        build_model("tiny", embed_std=0.0)


def test_build_cli_embed_std_is_saved(tmp_path, capsys):
    from safetensors.torch import load_file

    assert main(["build", "--preset", "tiny", "--embed-std", "0.2", "--out", str(tmp_path / "big")]) == 0
    weights = load_file(tmp_path / "big" / "model.safetensors")
    assert abs(float(weights["model.language_model.embed_tokens.weight"].std()) - 0.2) < 0.01
