"""Client/server over HTTP (docs/design.md §7): the server holds only public evaluation keys.

Modules, one job each:
    protocol   wire format: framing, headers, limits, the circuit signature
    validate   typed checks of what a client sends (contexts, ciphertexts)
    evaluate   the compiled circuit on ciphertexts with a PublicContext, refresh round trips as a generator
    registry   the bounded key registry and the table of evaluations awaiting a refresh
    server     FastAPI app factory and `he-inhibitor serve`
    embed      client-side tokenizer + embedding table (numpy, no torch)
    client     keygen, key files, registration, encryption, query, decryption
    local      a uvicorn server in a thread on 127.0.0.1 and a free port
    query      `he-inhibitor query`
    demo       `he-inhibitor demo`
"""
