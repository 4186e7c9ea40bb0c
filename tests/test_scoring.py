"""Concept-level scoring (late interaction over concepts) on hand-computed cases, and chunk-and-average."""

import numpy as np
import pytest
import torch

from concept_encoder.inference.encoder import encode, encode_chunked
from concept_encoder.inference.scoring import late_interaction, late_interaction_matrix


def test_late_interaction_on_a_hand_computed_case():
    a = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # two concepts: x and y
    b = torch.tensor([[[1.0, 1.0], [-1.0, 0.0], [0.0, 3.0]]])  # three: the diagonal, -x and y (unnormalised)
    # a -> b: x's best is the diagonal (cos 0.7071), y's best is y (1): mean 0.8536
    # b -> a: the diagonal's best 0.7071, -x's best 0 (x: -1, y: 0), y's best 1: mean 0.5690
    forward = (2 ** -0.5 + 1) / 2
    backward = (2 ** -0.5 + 0 + 1) / 3
    assert late_interaction(a, b, symmetric=False).item() == pytest.approx(forward, abs=1e-6)
    assert late_interaction(b, a, symmetric=False).item() == pytest.approx(backward, abs=1e-6)
    assert late_interaction(a, b).item() == pytest.approx((forward + backward) / 2, abs=1e-6)


def test_the_matrix_form_scores_every_pair_as_the_row_form():
    torch.manual_seed(0)
    q, d = torch.randn(5, 4, 8), torch.randn(7, 4, 8)
    matrix = late_interaction_matrix(q, d, chunk=2)  # chunked over queries
    for i in range(5):
        rows = late_interaction(q[i : i + 1].expand(7, -1, -1), d)
        assert torch.allclose(matrix[i], rows, atol=1e-6)
    one = torch.randn(1, 4, 8)  # a text against itself: every concept finds itself
    assert late_interaction(one, one).item() == pytest.approx(1.0, abs=1e-6)


def test_chunk_and_average_is_the_mean_of_the_chunks_vectors(tokenizer, sentences):
    from transformers import AutoModel

    from concept_encoder.offline import offline_folder

    model = AutoModel.from_pretrained(offline_folder("sentence-transformers/all-MiniLM-L6-v2")).eval()
    text = " ".join(sentences[:6])
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    room = 16 - 2
    pieces = [tokenizer.decode(ids[i : i + room]) for i in range(0, len(ids), room)]
    chunk_vectors = encode(model, tokenizer, pieces, max_length=16)
    sizes = torch.tensor([float(len(ids[i : i + room])) for i in range(0, len(ids), room)])
    assert sizes[-1] < room  # a short tail chunk: it must weigh less than a full one
    expected = torch.nn.functional.normalize((chunk_vectors * sizes[:, None]).sum(0), dim=0)
    got = encode_chunked(model, tokenizer, [text, sentences[0]], chunk_tokens=16)
    # decode/re-tokenise may move a word piece at a chunk edge: compare with a tolerance, and the short text's
    # single chunk exactly with the plain encoder
    assert torch.nn.functional.cosine_similarity(got[0], expected, dim=0) > 0.99
    assert torch.allclose(got[1], encode(model, tokenizer, [sentences[0]], max_length=16)[0], atol=1e-5)
    assert np.isclose(float(got[0].norm()), 1.0)


def test_zero_shot_reports_late_interaction_beside_the_same_baseline(tmp_path, tokenizer):
    """A concept encoder's zero-shot record carries maxsim_* on dev and held-out, each with the TF-IDF bar; the
    pooled score of a mean-pooled model, taken from the same concepts, equals `encode`'s."""
    from concept_encoder import ConceptEncoderForMaskedLM
    from concept_encoder.data import resolve_data_dir
    from concept_encoder.data.tasks import get_task
    from concept_encoder.evaluation.metrics import compute_metrics
    from concept_encoder.evaluation.zero_shot import zero_shot_sts, zero_shot_task
    from concept_encoder.inference.encoder import load_encoder

    from .conftest import tiny_config

    ConceptEncoderForMaskedLM(tiny_config(tokenizer.vocab_size)).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model, tok = load_encoder(tmp_path)
    result = zero_shot_task(model, tok, get_task("sick-r"), resolve_data_dir())
    for key in ("maxsim_spearman", "heldout_maxsim_spearman"):
        assert key in result["summary"]
        assert result["baselines"]["tfidf_cosine"][key] == result["baselines"]["tfidf_cosine"][key.replace("maxsim_", "")]
    pairs = [{"text_a": "a man plays a guitar", "text_b": "someone plays music", "label": 4.0},
             {"text_a": "a cat sleeps", "text_b": "the stock market fell", "label": 0.5},
             {"text_a": "two dogs run", "text_b": "dogs are running", "label": 4.5}]
    cosine = (encode(model, tok, [p["text_a"] for p in pairs]) * encode(model, tok, [p["text_b"] for p in pairs])).sum(-1)
    expected = compute_metrics(get_task("sick-r"), cosine.numpy(), np.array([p["label"] for p in pairs]))
    got = zero_shot_sts(model, tok, get_task("sick-r"), pairs)
    assert got["pearson"] == pytest.approx(100 * expected["pearson"], abs=1e-3)
