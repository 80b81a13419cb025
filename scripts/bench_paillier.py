"""Throughput of additively homomorphic encryption libraries at a 2048-bit modulus: encrypt,
decrypt and ciphertext additions per second, on the packed (gradient, hessian) plaintexts the
vertical trees send (about 160 bits each).

    nice -n 5 .venv/bin/python scripts/bench_paillier.py [--rows 2000]

`phe` (python-paillier, with gmpy2) one value at a time; `sf-heu` (SecretFlow's HEU) on whole
arrays; its OU (Okamoto-Uchiyama) scheme for reference, not used.
"""

from __future__ import annotations

import argparse
import json
import secrets
import time
from typing import Any

import numpy as np

KEY_BITS = 2048


def _values(n: int) -> list[int]:
    return [secrets.randbits(160) for _ in range(n)]


def bench_phe(n: int) -> dict[str, float]:
    import phe

    t = time.perf_counter()
    pub, priv = phe.paillier.generate_paillier_keypair(n_length=KEY_BITS)
    keygen = time.perf_counter() - t
    vals = _values(n)
    t = time.perf_counter()
    cts = [pub.raw_encrypt(v) for v in vals]
    enc = n / (time.perf_counter() - t)
    nsq = pub.nsquare
    t = time.perf_counter()
    acc = 1
    for c in cts * 5:
        acc = acc * c % nsq
    add = 5 * n / (time.perf_counter() - t)
    t = time.perf_counter()
    out = [priv.raw_decrypt(c) for c in cts]
    dec = n / (time.perf_counter() - t)
    assert out == vals
    return {"keygen_s": keygen, "encrypt_per_s": enc, "decrypt_per_s": dec, "add_per_s": add}


def bench_heu(n: int, schema: str) -> dict[str, float]:
    from heu import numpy as hnp
    from heu import phe as hphe

    t = time.perf_counter()
    kit = hnp.setup(getattr(hphe.SchemaType, schema), KEY_BITS)
    keygen = time.perf_counter() - t
    encoder = kit.bigint_encoder()
    vals = _values(n)
    plain = hnp.array(np.array(vals, dtype=object).reshape(-1, 1), encoder)
    t = time.perf_counter()
    ct = kit.encryptor().encrypt(plain)
    enc = n / (time.perf_counter() - t)
    # Bucket sums as the feature party runs them: every row into one of 32 bins of 10 features.
    rows = np.ones((1, n), dtype=np.int8)
    order = np.random.default_rng(0).integers(0, 32, size=(n, 10)).astype(np.int8)
    t = time.perf_counter()
    kit.evaluator().feature_wise_bucket_sum(ct, rows, order, 32, False)
    add = 10 * n / (time.perf_counter() - t)
    t = time.perf_counter()
    out = kit.decryptor().decrypt(ct).to_numpy(encoder).ravel().tolist()
    dec = n / (time.perf_counter() - t)
    assert out == vals
    return {"keygen_s": keygen, "encrypt_per_s": enc, "decrypt_per_s": dec, "add_per_s": add}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2000)
    args = parser.parse_args()
    results: dict[str, Any] = {"key_bits": KEY_BITS, "rows": args.rows}
    results["phe+gmpy2"] = bench_phe(max(args.rows // 4, 100))
    for schema in ("ZPaillier", "FPaillier", "OU"):
        results[f"sf-heu {schema}"] = bench_heu(args.rows, schema)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
