"""The committed artifacts agree with each other: the bundle was compiled from the shipped student."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from he_inhibitor.circuit.bundle import SHIPPED_BUNDLE, buckets_of, load_bundle  # noqa: E402
from he_inhibitor.circuit.client_bundle import ClientBundle  # noqa: E402
from he_inhibitor.circuit.executors import make_executor  # noqa: E402
from he_inhibitor.evaluate import SHIPPED_STUDENT  # noqa: E402
from he_inhibitor.model.student import load_student  # noqa: E402
from he_inhibitor.vocab import encode  # noqa: E402

SENTENCES = [("a gorgeous , witty , seductive movie .", 32),
             ("it 's a charming and often affecting journey , though the second half drags badly and the "
              "ending feels like it was written by a committee that never saw the first hour .", 64)]


@pytest.mark.parametrize(("text", "bucket"), SENTENCES)
def test_shipped_bundle_computes_the_shipped_student(text, bucket):
    """load_bundle recompiles and checks the hash; its plain executor equals torch in poly form."""
    model = load_student(SHIPPED_STUDENT, dtype=torch.float64).set_form("poly").eval()
    client = ClientBundle.load(SHIPPED_BUNDLE)
    assert buckets_of(SHIPPED_BUNDLE) == client.buckets
    prep = client.prepare(text)
    assert prep.T == bucket
    ids, mask = encode(client.embedder.tokenizer, [text], model.cfg.max_len)
    with torch.no_grad():
        want = model(torch.from_numpy(ids), torch.from_numpy(mask))[0].numpy()
    got = make_executor("plain", load_bundle(SHIPPED_BUNDLE, prep.T).compiled).run(prep.x0, prep.m).logits
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)  # the bundle holds float16 weights as float64
