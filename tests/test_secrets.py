"""sft/secrets.py: keys named for a credential and values shaped like one are secrets; names of
vocabulary tokens, lengths, paths, hub ids and revisions are not."""

import pytest

from sft.secrets import secret_key, secret_value


@pytest.mark.parametrize("key", ["hub_token", "github_token", "huggingface_token", "apikey", "api-key", "ApiKey",
                                 "private_key", "privateKey", "aws_secret_access_key", "client_secret", "db_password",
                                 "passphrase", "token", "auth_token", "bearer", "session_key", "OPENAI_API_KEY"])
def test_a_key_that_names_a_credential_is_a_secret(key):
    assert secret_key(key)


@pytest.mark.parametrize("key", ["eos_token", "pad_token", "pad_token_id", "stop_token_ids", "max_new_tokens",
                                 "max_tokens", "tokenizer", "include_num_input_tokens_seen", "key", "keep_stale",
                                 "parity_max_new_tokens", "model_name_or_path", "secretary_bird"])
def test_a_key_about_vocabulary_or_lengths_is_not(key):
    assert not secret_key(key)


@pytest.mark.parametrize("value", ["hf_" + "aB3" * 12, "ghp_" + "x1Y" * 12, "github_pat_" + "a1_" * 10,
                                   "sk-proj-" + "Ab1-" * 8, "AKIAIOSFODNN7EXAMPLE", "xoxb-1234567890-abcdef",
                                   "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.sig",
                                   "-----BEGIN OPENSSH PRIVATE KEY-----\nabc", "Bearer abcdefghijklmnop1234",
                                   "s3://minio:hunter22@127.0.0.1:9000/bucket", "Xk9vQ2mL7pR4tW8yB3nC6fH1jD5gS0aZ"])
def test_a_value_shaped_like_a_credential_is_a_secret_under_any_key(value):
    assert secret_value(value)


@pytest.mark.parametrize("value", ["HuggingFaceTB/SmolLM2-135M-Instruct", "0123456789abcdef0123456789abcdef01234567",
                                   "b179c95d" * 8, "google/gemma-3-4b-it", "data/raw/text-to-sql.jsonl",
                                   "http://127.0.0.1:8080/v1", "git@github.com:org/repo.git", "<|im_end|>",
                                   "Answer with one SQL query.", "sk-learn", "hf_hub"])
def test_names_paths_and_revisions_are_not(value):
    assert not secret_value(value)
