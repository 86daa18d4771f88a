"""Client/server over HTTP (docs/design.md §7): the server holds only public evaluation keys.

Modules, one job each:
    protocol   wire format: framing, headers, limits, the signature (every token bucket)
    body       request bodies read as they arrive, under a cap and timeouts
    validate   typed checks of what a client sends (contexts from their first bytes, ciphertexts)
    signature  a bucket's client-facing signature (the evaluation itself: circuit/evaluation.py)
    cancel     stopping an evaluation between two operations when its client has gone
    registry   the memory budget, key sets, evaluations in progress, rate limits
    auth       optional bearer tokens with per-token quotas
    server     FastAPI app factory and `he-inhibitor serve`
    abuse      the load-and-abuse mix and `he-inhibitor abuse-bench`
    embed      client-side tokenizer + embedding table (numpy, no torch)
    client     keygen, key files, registration, encryption, query, decryption
    local      a uvicorn server in a thread on 127.0.0.1 and a free port
    query      `he-inhibitor query`
    demo       `he-inhibitor demo`
"""
