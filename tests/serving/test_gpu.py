"""The service on CUDA (PyTorch backend, fp16 autocast): runs only where a GPU exists."""

from __future__ import annotations

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here"),
]


def test_the_service_translates_on_cuda(serve):
    server = serve(device="cuda", backend="torch")
    with server.client() as client:
        models = client.get("/v1/models").json()["models"]
        assert all(m["device"].startswith("cuda") for m in models)
        reply = client.post(
            "/v1/translate",
            json={"text": ["A man is riding a bike.", "Two dogs play."], "source": "en", "target": "de"},
        )
        assert reply.status_code == 200, reply.text
        assert all(t["text"] for t in reply.json()["translations"])
