"""GLoRIA's local (word-region) similarity: equal to a literal port of the source, and used by zero-shot."""

import numpy as np
import torch
from torch import nn

from embedkit.models import load_encoder
from embedkit.models.gloria import aggregate_words, process_text

from .conftest import batch

PROMPTS = ["mild pulmonary edema", "  increased bilateral consolidation at the right uppper lobe",
           "small left subpulmonic pleural effusion", "there is pneumothorax.", "cardiomegaly"]


def _attention_fn(query, context, temp1):
    """marshuang80/gloria loss/gloria_loss.py::attention_fn, line for line."""
    batch_size, query_l = query.size(0), query.size(2)
    ih, iw = context.size(2), context.size(3)
    source_l = ih * iw
    context = context.view(batch_size, -1, source_l)
    context_t = torch.transpose(context, 1, 2).contiguous()
    attn = torch.bmm(context_t, query).view(batch_size * source_l, query_l)
    attn = nn.Softmax(dim=-1)(attn).view(batch_size, source_l, query_l)
    attn = torch.transpose(attn, 1, 2).contiguous().view(batch_size * query_l, source_l)
    attn = nn.Softmax(dim=-1)(attn * temp1).view(batch_size, query_l, source_l)
    return torch.bmm(context, torch.transpose(attn, 1, 2).contiguous())


def _cosine(x1, x2, dim=1, eps=1e-8):
    return (torch.sum(x1 * x2, dim) / (torch.norm(x1, 2, dim) * torch.norm(x2, 2, dim)).clamp(min=eps)).squeeze()


def _reference_local(img_emb_l, text_emb_l, cap_lens):
    """GLoRIA's get_local_similarities: full 97-slot word tensors, cap_len slots from slot 1."""
    batch_size, out = img_emb_l.shape[0], []
    for i in range(len(text_emb_l)):
        words_num = cap_lens[i]
        word = text_emb_l[i, :, 1:words_num + 1].unsqueeze(0).contiguous().repeat(batch_size, 1, 1)
        wei = _attention_fn(word, img_emb_l, 4.0)
        word = word.transpose(1, 2).contiguous().view(batch_size * words_num, -1)
        wei = wei.transpose(1, 2).contiguous().view(batch_size * words_num, -1)
        row = _cosine(word, wei).view(batch_size, words_num).mul(5.0).exp()
        out.append(torch.log(row.max(dim=1, keepdim=True).values))
    return torch.cat(out, 1)


def test_local_similarity_equals_the_sources_computation(images):
    enc = load_encoder("gloria-tiny", seed=2)
    model, tok = enc.model, None
    from embedkit.models import bert

    tok = bert.load_tokenizer(enc.tokenizer_dir)
    x = batch(enc, images)
    with torch.no_grad():
        # image side by hand: upsample, trunk to layer 3, 1x1 local embedder, (B, D, h, w)
        m, up = model.img_encoder.model, nn.functional.interpolate(x, size=(40, 40), mode="bilinear", align_corners=True)
        feats = m.layer3(m.layer2(m.layer1(m.maxpool(m.relu(m.bn1(m.conv1(up)))))))
        img_l = model.img_encoder.local_embedder(feats)
        # text side: 97 word slots, pieces aggregated, summed over the last 4 layers -> (M, D, 97)
        t = tok([process_text(p) for p in PROMPTS], padding="max_length", truncation=True, max_length=97, return_tensors="pt")
        hs = torch.stack(model.text_encoder.model(**t, output_hidden_states=True).hidden_states[-4:], 1)
        ix = {v: k for k, v in tok.get_vocab().items()}
        words = torch.stack([aggregate_words(h, [ix[int(i)] for i in ids]) for h, ids in zip(hs, t["input_ids"])])
        text_l = words.sum(1).permute(0, 2, 1)
        cap_lens = [len([w for w in p if not w.startswith("[")]) for p in PROMPTS]  # characters: the source's quirk
        expected = _reference_local(img_l, text_l, cap_lens)
    got = enc.pair_similarity(x, enc.pair_similarity.prepare(PROMPTS))
    assert got.shape == (len(images), len(PROMPTS))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_extraction_stores_it_and_zeroshot_uses_local_plus_global(phantom_dir, tmp_path):
    from embedkit.cache import read_cache
    from embedkit.cache.extract import ExtractConfig, extract
    from embedkit.heads.runner import ExperimentConfig, run_experiment
    from embedkit.heads.zeroshot import probabilities
    from embedkit.predictions import read_predictions

    (res,) = extract(ExtractConfig(manifest=phantom_dir / "manifest.csv", models=("gloria-tiny",), cache_dir=tmp_path,
                                   rows_per_chunk=64))
    from embedkit.cache.join import join
    from embedkit.manifest import read_manifest

    cache = join(read_cache(res.path), read_manifest(phantom_dir / "manifest.csv"))
    for fmt, t in cache.text.items():
        assert t.local is not None and t.local.shape == (len(cache.image_id), len(t.prompts)), fmt
    # rows line up with the images: recompute two images' similarities directly
    enc = load_encoder("gloria-tiny")
    from embedkit.models.images import decode

    m = read_manifest(phantom_dir / "manifest.csv")
    rows = [0, 100]
    x = torch.stack([enc.preprocess(decode(m.image_path(m.rows[r]))) for r in rows])
    gl = cache.text["gloria"]
    direct = enc.pair_similarity(x, enc.pair_similarity.prepare(gl.prompts)).numpy()
    np.testing.assert_allclose(gl.local[rows], direct, atol=1e-5)
    (run,) = run_experiment(ExperimentConfig(model="gloria-tiny", manifest=phantom_dir / "manifest.csv", method="zeroshot",
                                             cache=res.path, runs_dir=tmp_path / "r", prompts=("gloria",), n_boot=20))
    assert run.record["selection"]["similarity"].startswith("(local word-region + global cosine) / 2")
    test = np.flatnonzero(cache.meta["split"] == "test")
    p = probabilities(cache.embeddings[test], gl, "gloria", n_classes=6, logit_scale=10.0, rng=np.random.default_rng(0),
                      local=gl.local[test])
    np.testing.assert_allclose(read_predictions(run.path / "predictions.csv").select("test").proba, p, atol=1e-6)
