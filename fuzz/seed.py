#!/usr/bin/env python3
"""Writes the seed corpora (fuzz/seeds/<target>/) from the annotated byte
arrays and byte strings in the unit tests, so the fuzzers start from the
packets the hand-written tests already describe. Run from the repository
root: `python3 fuzz/seed.py`. The CSR seeds are made with openssl and the
journal seeds with the journal's own line format (CRC-32 via zlib, the same
IEEE polynomial as crc32fast).

Each seed gets the target's selector byte in front (see each target's doc
comment): one copy per selector value that matters.
"""
import hashlib, os, re, subprocess, sys, tempfile, zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fuzz", "seeds")


def rust_bytes_literal(body):
    """The bytes of a Rust b"..." literal's body."""
    out = bytearray()
    i = 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out += c.encode()
            i += 1
            continue
        n = body[i + 1]
        if n == "\n":  # line continuation: skip the newline and indentation
            i += 2
            while i < len(body) and body[i] in " \t":
                i += 1
            continue
        simple = {"r": b"\r", "n": b"\n", "t": b"\t", "0": b"\0", "\\": b"\\", '"': b'"', "'": b"'"}
        if n in simple:
            out += simple[n]
            i += 2
        elif n == "x":
            out.append(int(body[i + 2 : i + 4], 16))
            i += 4
        else:
            raise ValueError("escape \\" + n)
    return bytes(out)


def byte_strings(path):
    text = open(path).read()
    return [rust_bytes_literal(m) for m in re.findall(r'b"((?:[^"\\]|\\.|\\\n)*)"', text, re.S)]


def byte_arrays(path):
    """Every `&[ ... ]` array of byte tokens (0xNN, decimal, b'c')."""
    text = open(path).read()
    arrays = []
    for m in re.finditer(r"&\[\s*\n?(.*?)\]", text, re.S):
        body = re.sub(r"//[^\n]*", "", m.group(1))
        out = bytearray()
        ok = True
        for tok in re.findall(r"b'(?:\\.|[^'])'|0x[0-9A-Fa-f]+|\d+|b\"[^\"]*\"|[^\s,]+", body):
            if tok.startswith("b'"):
                out += rust_bytes_literal(tok[2:-1])
            elif tok.startswith('b"'):
                out += rust_bytes_literal(tok[2:-1])
            elif tok.startswith("0x"):
                out.append(int(tok, 16) & 0xFF)
            elif tok.isdigit() and int(tok) < 256:
                out.append(int(tok))
            else:
                ok = False
                break
        if ok and len(out) >= 2:
            arrays.append(bytes(out))
    return arrays


def write(target, seeds):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    for s in seeds:
        name = hashlib.sha1(s).hexdigest()
        with open(os.path.join(d, name), "wb") as f:
            f.write(s)
    print(f"{target}: {len(set(seeds))} seeds")


def main():
    src = lambda p: os.path.join(ROOT, p)
    # HTTP: the byte strings of the codec's tests and the wire tests.
    http = [b for p in ["proxy/src/http/codec.rs", "tests/tests/http_wire.rs"] for b in byte_strings(src(p))]
    http = [b for b in http if b[:4] in (b"GET ", b"POST", b"PUT ", b"HEAD", b"DELE", b"PATC") or b.startswith(b"\x16")]
    write("http_codec", [bytes([sel]) + b for b in http for sel in (0, 1, 2)])

    # MQTT CONNECT: the codec's arrays that start with a CONNECT byte.
    connect = [a for a in byte_arrays(src("proxy/src/mqtt/codec.rs")) if a[0] == 0x10]
    write("mqtt_connect", [bytes([sel]) + a for a in connect for sel in (0, 1, 2)])

    # Relay: every array in the relay's tests, client side for each level
    # (selector % 3: 0 = 3.1.1, 1 = 5, 2 = 3.1) and server side (0x80 set).
    relay = byte_arrays(src("proxy/src/mqtt/relay/tests.rs"))
    write("relay_codec", [bytes([sel]) + a for a in relay for sel in (0, 1, 2, 0x80, 0x81)])

    # Register bodies: the JSON objects in the request tests and wire tests.
    bodies = []
    for p in ["registry/src/request.rs", "tests/tests/http_wire.rs", "tests/tests/explicit_flow.rs"]:
        text = open(src(p)).read()
        for m in re.findall(r'r#"(\{.*?\})"#', text, re.S):
            bodies.append(m.encode())
    bodies.append(b'{"username":"dev01","password":"secret"}')
    bodies.append(b'{"username":"dev01","password":"secret1","roles":["sensor"],"permissions":[{"resource":"plant/#","operation":"read","context":"mqtt"}],"context":"line 3"}')
    write("register_request", bodies)

    # CSRs: made with openssl (the same kinds the device tests send).
    csrs = []
    with tempfile.TemporaryDirectory() as tmp:
        key_ec = os.path.join(tmp, "ec.pem")
        key_ed = os.path.join(tmp, "ed.pem")
        key_rsa = os.path.join(tmp, "rsa.pem")
        subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key_ec], check=True, capture_output=True)
        subprocess.run(["openssl", "genpkey", "-algorithm", "ED25519", "-out", key_ed], check=True, capture_output=True)
        subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", key_rsa], check=True, capture_output=True)
        for key in (key_ec, key_ed, key_rsa):
            for subj in ["/CN=dev-01", "/O=plant", "/CN=dev-01/CN=admin", "/CN=\u00e9t\u00e9", "/CN=dev-01/O=plant/OU=line 3"]:
                pem = subprocess.run(
                    ["openssl", "req", "-new", "-key", key, "-subj", subj, "-utf8"],
                    check=True, capture_output=True,
                ).stdout
                der = subprocess.run(["openssl", "req", "-outform", "DER"], input=pem, check=True, capture_output=True).stdout
                csrs.append(b"\x00" + pem)
                csrs.append(b"\x01" + der)
    write("csr", csrs)

    # Journal: lines as journal.rs writes them (the records its tests use).
    def line(js):
        return b"%08x " % zlib.crc32(js) + js + b"\n"
    user = b'{"op":"putUser","user":{"username":"a","password_hash":"$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaA","roles":["sensor"],"permissions":[{"resource":"plant/#","operation":"read","context":"mqtt"}],"created_at":5,"origin":"http"}}'
    old = b'{"op":"putUser","user":{"username":"a","password_hash":null,"roles":["sensor"],"permissions":[],"created_at":5,"origin":"http"}}'
    role = b'{"op":"putRole","role":{"name":"sensors","permissions":[{"resource":"plant/#","operation":"read","context":"mqtt"}]}}'
    del_role = b'{"op":"deleteRole","name":"sensors"}'
    del_user = b'{"op":"deleteUser","username":"a"}'
    journals = [
        line(user) + line(del_user),
        line(old),
        line(role) + line(del_role),
        line(user) + line(role) + line(del_user)[:20],
        line(user)[:-1],
    ]
    write("journal_replay", [bytes([mode]) + j for j in journals for mode in (0, 1)])


if __name__ == "__main__":
    main()
