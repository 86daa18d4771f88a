"""The committed artifacts agree with each other (the bundle was compiled from the shipped student),
and the shipped student meets its quality bar on SST-2 dev."""

import json

import numpy as np
import pytest
import torch

from he_inhibitor.circuit.bundle import SHIPPED_BUNDLE, buckets_of, load_bundle
from he_inhibitor.circuit.client_bundle import ClientBundle
from he_inhibitor.circuit.executors import make_executor
from he_inhibitor.data import default_data_dir, load_sst2
from he_inhibitor.evaluate import range_report
from he_inhibitor.model.predict import accuracy
from he_inhibitor.model.student import load_student
from he_inhibitor.paths import SHIPPED_STUDENT
from he_inhibitor.vocab import encode, load_tokenizer

SENTENCES = [("a gorgeous , witty , seductive movie .", 32),
             ("it 's a charming and often affecting journey , though the second half drags badly and the "
              "ending feels like it was written by a committee that never saw the first hour .", 64)]


@pytest.mark.parametrize(("text", "bucket"), SENTENCES)
def test_shipped_bundle_computes_the_shipped_student(text, bucket):
    """load_bundle recompiles the circuit of the sentence's plan and checks its hash; its plain executor
    equals torch in poly form."""
    model = load_student(SHIPPED_STUDENT, dtype=torch.float64).set_form("poly").eval()
    client = ClientBundle.load(SHIPPED_BUNDLE)
    assert buckets_of(SHIPPED_BUNDLE) == client.buckets
    prep = client.prepare(text)
    assert prep.T == bucket
    ids, mask = encode(client.embedder.tokenizer, [text], model.cfg.max_len)
    with torch.no_grad():
        want = model(torch.from_numpy(ids), torch.from_numpy(mask))[0].numpy()
    plan = load_bundle(SHIPPED_BUNDLE, prep.T, prep.n_tokens)
    assert plan.compiled.plan.m <= prep.n_tokens < prep.T  # the shifts follow the sentence, not the bucket
    got = make_executor("plain", plan.compiled).run(prep.x0, prep.m).logits
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)  # the bundle holds float16 weights as float64


@pytest.mark.skipif(default_data_dir() is None, reason="SST-2 data absent (../shared/data/sst2 or $HE_INHIBITOR_DATA)")
def test_shipped_student_meets_the_bar_on_dev():
    """In the circuit's own polynomial form: >= 85% on all 872 dev sentences with >= 2 layers, no
    sentence truncated, none pushing a polynomial beyond its bound; and metrics.json records that accuracy."""
    sentences, labels = load_sst2(default_data_dir(), "dev")
    student, tok = load_student(SHIPPED_STUDENT).set_form("poly"), load_tokenizer(SHIPPED_STUDENT)
    assert student.cfg.n_layers >= 2
    assert max(len(e.ids) for e in tok.encode_batch(sentences)) <= student.cfg.max_len
    acc = accuracy(student, tok, sentences, labels)
    assert acc >= 0.85
    assert acc == pytest.approx(json.loads((SHIPPED_STUDENT / "metrics.json").read_text())["dev_poly"], abs=1e-9)
    assert range_report(student, tok, sentences)["beyond_bound"] == 0
