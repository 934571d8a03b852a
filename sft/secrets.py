"""What looks like a credential: a key named for one, or a value shaped like one.

A credential in params would go into git, dvc.lock, the run-cache, the log line and every
checkpoint's training_args.bin. sft.params refuses it at any depth, found two ways: by its key's
words (hub_token, githubToken, apikey, private-key, ...), and by the shape of its value (hf_...,
ghp_..., sk-..., AKIA..., a JWT, a PEM key, a URL with a password, a long random key), whatever the
key is called.
"""

from __future__ import annotations

import itertools
import re

SECRET_WORDS = {"password", "passwd", "passphrase", "pwd", "secret", "secrets", "credential", "credentials",
                "apikey", "accesskey", "secretkey", "privatekey", "authkey", "token", "bearer", "cookie"}
SECRET_PAIRS = {("api", "key"), ("access", "key"), ("private", "key"), ("secret", "key"), ("auth", "key"),
                ("signing", "key"), ("session", "key"), ("encryption", "key"), ("client", "key")}
# "<word>_token" keys that name a vocabulary token (eos_token: "<|im_end|>"), not a credential.
VOCABULARY = {"eos", "bos", "pad", "unk", "sep", "cls", "mask", "stop", "end", "start", "eot", "eom", "image",
              "audio", "video", "special", "tool", "think", "boi", "eoi", "sot", "im"}
SECRET_VALUE = re.compile(
    r"\bhf_[A-Za-z0-9]{20,}|\bgh[pousr]_[A-Za-z0-9]{20,}|\bgithub_pat_\w{20,}|\bglpat-[\w-]{20,}"
    r"|\bsk-(?:proj-|ant-)?[\w-]{20,}|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b|\bxox[abposr]-[\w-]{10,}"
    r"|\beyJ[\w-]{10,}\.eyJ[\w-]{10,}\.|-----BEGIN [A-Z ]*PRIVATE KEY-----|\bbearer\s+[\w.~+/-]{16,}"
    r"|[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@", re.IGNORECASE)
# A long run of letters and digits with no separator, mixing cases and digits: a random key. Names,
# paths and revisions (hex) do not look like this.
RANDOM_KEY = re.compile(r"(?=[A-Za-z0-9]*[a-z])(?=[A-Za-z0-9]*[A-Z])(?=[A-Za-z0-9]*[0-9])[A-Za-z0-9]{32,}")
SECRET_ENV = {"hub": "HF_TOKEN", "hf": "HF_TOKEN", "huggingface": "HF_TOKEN", "wandb": "WANDB_API_KEY"}


def key_words(key: str) -> list[str]:
    """hub_token, hubToken, Hub-Token -> ['hub', 'token']."""
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", key).lower().replace("-", "_").split("_")


def secret_key(key: str) -> bool:
    words = [w for w in key_words(key) if w]
    if any(w in SECRET_WORDS for w in words if w != "token") or any(p in SECRET_PAIRS for p in itertools.pairwise(words)):
        return True
    return any(w == "token" and (i == 0 or words[i - 1] not in VOCABULARY) for i, w in enumerate(words))


def secret_value(value: str) -> bool:
    return bool(SECRET_VALUE.search(value) or RANDOM_KEY.search(value))


def secret_env(key) -> str:
    """Where the credential a key names belongs instead: its library's environment variable."""
    words = key_words(key) if isinstance(key, str) else []
    return next((v for k, v in SECRET_ENV.items() if k in words), "the library's environment variable")
