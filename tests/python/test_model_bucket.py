"""The `model_bucket` Python package (clients/python) against a live server with the real
SmolLM2 model: each method, streaming, pulls with progress, typed errors, a server started for
the session, and the API key.

Run by tests/tests/python_client.rs, which installs the package with pip and says where things
are: EDEN_URL (a server on an empty folder, pulling from a stand-in hub), EDEN_SMOL_PATH (the
SmolLM2 file), EDEN_SMOL (its ID), EDEN_GEMMA (the ID of the model the hub serves),
EDEN_BUCKET_BIN (the `model-bucket` binary, for the session server), EDEN_PKG_DIR (where pip
installed the package).
"""

import os
import socket
import tempfile
import unittest

import model_bucket
from model_bucket import (
    AuthenticationError,
    BadRequestError,
    Bucket,
    ModelInfo,
    NotFoundError,
    ServerDownError,
    get_bucket,
)

URL = os.environ["EDEN_URL"]
SMOL_PATH = os.environ["EDEN_SMOL_PATH"]
SMOL = os.environ["EDEN_SMOL"]
GEMMA = os.environ["EDEN_GEMMA"]

GREEDY = {"temperature": 0, "seed": 1}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Methods(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.bucket = get_bucket(start=False)
        cls.info = cls.bucket.add_model(SMOL_PATH)

    def test_the_package_is_the_installed_one(self):
        # Installed by pip, not imported from the source tree.
        self.assertTrue(model_bucket.__file__.startswith(os.environ["EDEN_PKG_DIR"]), model_bucket.__file__)

    def test_add_model_describes_the_model(self):
        info = self.info
        self.assertIsInstance(info, ModelInfo)
        self.assertEqual(info.model_id, SMOL)
        self.assertIn("chat", info.capabilities)
        self.assertIn("completion", info.capabilities)
        self.assertEqual(info.context_length, 8192)
        self.assertEqual(info.quantization, "Q4_1")
        self.assertEqual(info.parameters, "135M")
        self.assertEqual(info.size_bytes, os.path.getsize(SMOL_PATH))
        # Adding the same file again returns the same model.
        self.assertEqual(self.bucket.add_model(SMOL_PATH).model_id, SMOL)

    def test_add_model_with_a_custom_id(self):
        info = self.bucket.add_model(SMOL_PATH, id="smol-for-tests")
        self.assertIn("smol-for-tests", info.aliases)
        self.assertEqual(self.bucket.get_model("smol-for-tests").model_id, SMOL)
        with self.assertRaises(BadRequestError) as e:
            self.bucket.add_model(SMOL_PATH, id="no spaces")
        self.assertEqual(e.exception.param, "id")

    def test_add_model_refuses_what_is_not_a_gguf_file(self):
        with tempfile.TemporaryDirectory() as d:
            text = os.path.join(d, "notes.gguf")
            with open(text, "w") as f:
                f.write("not a model")
            fifo = os.path.join(d, "pipe.gguf")
            os.mkfifo(fifo)
            for path, why in [
                (text, "not a usable GGUF"),
                (fifo, "not a regular file"),
                (d, "not a regular file"),
                (os.path.join(d, "missing.gguf"), "No such file"),
            ]:
                with self.assertRaises(BadRequestError, msg=path) as e:
                    self.bucket.add_model(path)
                self.assertEqual(e.exception.status, 400)
                self.assertEqual(e.exception.param, "path")
                self.assertIn(why, e.exception.message)
        self.assertNotIn("notes", [m.model_id for m in self.bucket.list_models()])

    def test_list_load_unload(self):
        ids = [m.model_id for m in self.bucket.list_models()]
        self.assertIn(SMOL, ids)
        info = self.bucket.load_model(SMOL)
        self.assertEqual(info.state, "ready")
        self.assertEqual(self.bucket.unload_model(SMOL), "unloaded")
        self.assertEqual(self.bucket.get_model(SMOL).state, "unloaded")

    def test_generate_whole_and_streamed_agree(self):
        q = "What is the capital of France? Answer in one word."
        whole = self.bucket.generate(q, max_tokens=12, model=SMOL, **GREEDY)
        self.assertIsInstance(whole, str)
        self.assertIn("Paris", whole)
        pieces = list(self.bucket.generate(q, max_tokens=12, model=SMOL, stream=True, **GREEDY))
        self.assertGreater(len(pieces), 1)
        self.assertEqual("".join(pieces), whole)

    def test_generate_raw_continues_the_text(self):
        text = self.bucket.generate("The capital of France is", max_tokens=6, model=SMOL, raw=True, **GREEDY)
        self.assertIn("Paris", text)

    def test_chat_and_sampling_parameters(self):
        messages = [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is the capital of France? Answer in one word."},
        ]
        a = self.bucket.chat(messages, max_tokens=8, model=SMOL, **GREEDY)
        self.assertIn("Paris", a)
        streamed = "".join(self.bucket.chat(messages, max_tokens=8, model=SMOL, stream=True, **GREEDY))
        self.assertEqual(streamed, a)
        short = self.bucket.chat(messages, max_tokens=1, model=SMOL, **GREEDY)
        self.assertLessEqual(len(short), len(a))
        with self.assertRaises(BadRequestError) as e:
            self.bucket.chat(messages, model=SMOL, temperature=-1)
        self.assertEqual(e.exception.param, "temperature")

    def test_an_unknown_model_is_not_found(self):
        with self.assertRaises(NotFoundError) as e:
            self.bucket.generate("hi", model="no-such-model")
        self.assertEqual(e.exception.status, 404)
        self.assertEqual(e.exception.code, "model_not_found")
        with self.assertRaises(NotFoundError):
            self.bucket.load_model("no-such-model")
        with self.assertRaises(NotFoundError):
            list(self.bucket.chat([{"role": "user", "content": "hi"}], model="no-such-model", stream=True))

    def test_pull_reports_progress_and_lists_the_model(self):
        steps = []
        info = self.bucket.pull("gguf-org/gemma-3-270m-gguf", file="gemma-3-270m-q4_k_m.gguf", progress=steps.append)
        self.assertEqual(info.model_id, GEMMA)
        self.assertEqual(steps[-1].status, "success")
        downloading = [s for s in steps if s.status == "downloading"]
        self.assertTrue(downloading, steps)
        self.assertTrue(all(0 <= (s.fraction or 0) <= 1 for s in steps))
        self.assertIn(GEMMA, [m.model_id for m in self.bucket.list_models()])
        with self.assertRaises(BadRequestError):
            self.bucket.pull("not a repo at all!")


class ServerDown(unittest.TestCase):
    def test_no_server_raises_server_down(self):
        url = f"http://127.0.0.1:{free_port()}"
        with self.assertRaises(ServerDownError):
            get_bucket(url, start=False)
        with self.assertRaises(ServerDownError):
            Bucket(url).list_models()
        with self.assertRaises(ServerDownError):
            get_bucket("http://192.0.2.1:8080", start=True)


class SessionServer(unittest.TestCase):
    def test_get_bucket_starts_a_server_for_the_session_and_honours_the_key(self):
        url = f"http://127.0.0.1:{free_port()}"
        with tempfile.TemporaryDirectory() as d:
            bucket = get_bucket(url, api_key="sekret", serve_args=["--models-dir", d, "--api-key", "sekret"])
            try:
                self.assertEqual(bucket.list_models(), [])
                with self.assertRaises(AuthenticationError) as e:
                    Bucket(url, api_key="wrong").list_models()
                self.assertEqual(e.exception.status, 401)
                with self.assertRaises(AuthenticationError):
                    Bucket(url).list_models()
                # A second call finds the running server instead of starting another.
                self.assertEqual(get_bucket(url, api_key="sekret").list_models(), [])
            finally:
                model_bucket._started.pop(url).stop()
            self.assertFalse(model_bucket.answers(url))


if __name__ == "__main__":
    unittest.main()
