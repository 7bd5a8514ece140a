"""The web demo (examples/app.py): its logic on tiny models in `make demo`'s layout, then the real page in headless
Chromium (Debian's `chromium` + `chromium-driver`, driven by selenium): Tokenize and Generate, images checked.

The browser test saves a screenshot in tmp_path; with FULLVQ_APP_SCREENSHOT=docs/app.png it is copied there, and
with FULLVQ_APP_DEMO_DIR=outputs/demo it runs against a real `make demo` output instead of the tiny models.
"""

import importlib.util
import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import randomize_bridge
from hub_server import HubServer, Repo
from PIL import Image

from fullvq_hf import FVQModel, LlamaGenConfig, LlamaGenForConditionalGeneration, LlamaGenPipeline

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
TINY = dict(block_out_channels=(16, 16, 32), in_channels=1, out_channels=1, sample_size=32, codebook_size=256,
            codebook_dim=8)  # fmt: skip  # 32x32 grey -> 8x8 tokens, as the demo


def load_app():
    spec = importlib.util.spec_from_file_location("fullvq_app", ROOT / "examples" / "app.py")
    app = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = app  # dataclasses look their module up
    spec.loader.exec_module(app)
    return app


@pytest.fixture(scope="module")
def app():
    return load_app()


def build_tiny_demo(out: Path) -> Path:
    """Random tiny models in `make demo`'s layout: fvq/model (folded), vq/model, pipeline/."""
    torch.manual_seed(0)
    fvq = randomize_bridge(FVQModel.from_preset("tiny", "S/2", **TINY), std=0.5)
    fvq.save_pretrained(out / "fvq" / "model", fold_codebook=True)
    FVQModel.from_preset("tiny", None, quantizer_type="vq", **TINY).save_pretrained(out / "vq" / "model")
    gpt = LlamaGenForConditionalGeneration(
        LlamaGenConfig(
            vocab_size=256,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_classes=10,
            grid_size=8,
        )  # fmt: skip
    )
    torch.nn.init.normal_(gpt.output.weight, std=0.5)  # the head is zero-initialised: make logits non-uniform
    LlamaGenPipeline(transformer=gpt, vqvae=FVQModel.from_pretrained(out / "fvq" / "model")).save_pretrained(
        out / "pipeline"
    )
    return out


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    return build_tiny_demo(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="module")
def demo(app, demo_dir):
    args = app.parse_args(["--demo-dir", str(demo_dir), "--usage-images", "300"])
    return app.Demo(app.load_models(args), usage_images=300)


def non_blank(image: Image.Image) -> bool:
    return float(np.asarray(image.convert("L"), dtype=np.float32).std()) > 1.0


# ------------------------------------------------------------------ logic, no browser
def test_tokenize_outputs(demo):
    choices = demo.bundled_choices()
    assert any(c.startswith("Fashion-MNIST test #") for c in choices) and "photo: astronaut" in choices
    original, recon, token_map, usage, text = demo.tokenize("FVQ (VQBridge)", choices[0], None)
    assert original.size == recon.size == token_map.size == (256, 256)  # 32 px x 8, 8x8 tokens x 32 px
    assert non_blank(original) and non_blank(token_map) and non_blank(usage)
    # the original is the real test image, padded 28 -> 32 (a black border of 2 px = 16 display px)
    index = int(choices[0].split("#")[1].split(":")[0])
    from fullvq_hf.data import load_fashion_mnist

    expected = load_fashion_mnist("test")[0][index]
    assert np.array_equal(np.asarray(original)[16:-16:8, 16:-16:8], expected)
    assert np.asarray(original)[:16].max() == 0
    assert "PSNR" in text and "dB" in text and "/256" in text and "300 images" in text
    counts, n = demo.test_usage("FVQ (VQBridge)")
    assert n == 300 and counts.sum() == 300 * 64  # every token of every image counted once


def test_token_map_colours(app):
    ids = torch.tensor([[3, 3], [4, 1000]])
    image = np.asarray(app.token_map_image(ids, target=8))  # 4 px cells, too small for written ids
    assert image.shape == (8, 8, 3)
    assert (image[0, 0] == image[0, 4]).all() and not (image[0, 0] == image[4, 0]).all()


def test_uploads_are_checked(app, demo, tmp_path):
    big = tmp_path / "wide.png"
    Image.new("RGB", (120, 60), (200, 30, 30)).save(big)
    original, *_, text = demo.tokenize("plain VQ", None, str(big))
    assert original.size == (256, 256)
    assert "centre-cropped from 120x60" in text and "converted to grey" in text
    small = tmp_path / "small.png"
    Image.new("L", (20, 10), 255).save(small)
    *_, text = demo.tokenize("plain VQ", None, str(small))
    assert "padded from 20x10 to 32x32" in text
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not a PNG")
    with pytest.raises(app.AppError, match=r"broken\.png could not be read as an image.*Upload a PNG"):
        demo.tokenize("plain VQ", None, str(broken))


def test_compare_and_generate(app, demo):
    original, fvq_recon, fvq_map, vq_recon, vq_map, text = demo.compare("photo: astronaut", None)
    assert original.size == fvq_recon.size == vq_recon.size == (256, 256)
    assert "| FVQ (VQBridge) |" in text and "| plain VQ |" in text and "resized from 512x512" in text
    grid, info = demo.generate([0, 9], 3, 2.0, 50, 1.0, 7)
    assert grid.size == app.grid_layout(2, 3, 32, 32)[:2] == (app.GRID_MARGIN + 3 * 64, 128)
    assert non_blank(grid.crop((app.GRID_MARGIN, 0, grid.width, grid.height)))
    again, _ = demo.generate([9], 3, 2.0, 50, 1.0, 7)  # a row depends on (seed, class) only
    assert np.array_equal(np.asarray(again)[:, app.GRID_MARGIN :], np.asarray(grid)[64:, app.GRID_MARGIN :])
    with pytest.raises(app.AppError, match="pick at least one class"):
        demo.generate([], 3, 2.0, 50, 1.0, 7)


def test_missing_models_are_one_error_line(app, tmp_path, capsys):
    assert app.main(["--demo-dir", str(tmp_path / "nothing")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: no tokenizer at {tmp_path / 'nothing' / 'fvq' / 'model'}: run `make demo` first, or pass "
        "--tokenizer FOLDER_OR_HUB_ID (or --tokenizer none to leave it out)"
    ]
    assert app.main(["--tokenizer", str(tmp_path), "--compare-tokenizer", "none", "--pipeline", "none"]) == 2
    assert capsys.readouterr().err.startswith(f"error: could not load the tokenizer {str(tmp_path)!r}: ")


# ------------------------------------------------------------------ the page in a real browser
def publish(hub: HubServer, repo_id: str, folder: Path) -> None:
    """Put a model folder on the loopback Hub as one commit (what push_to_hub would upload)."""
    files = {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }
    with hub.state.lock:
        hub.state.repos[repo_id] = Repo(repo_id)
        hub.state.repos[repo_id].commit("main", files, "upload")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_server(url: str, process: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the app exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"the app did not answer at {url} within {timeout} s")


def shown_image(driver, elem_id: str, timeout: float = 120) -> Image.Image:
    """Wait until the <img> inside #elem_id has loaded, check the browser decoded it, and fetch the same file."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def loaded(d):
        imgs = d.find_elements(By.CSS_SELECTOR, f"#{elem_id} img")
        ok = imgs and d.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth > 0", imgs[0]
        )
        return imgs[0] if ok else False

    img = WebDriverWait(driver, timeout).until(loaded)
    width, height = driver.execute_script(
        "return [arguments[0].naturalWidth, arguments[0].naturalHeight]", img
    )
    with urllib.request.urlopen(img.get_attribute("src"), timeout=10) as r:
        image = Image.open(io.BytesIO(r.read()))
        image.load()
    assert image.size == (width, height)
    return image


@pytest.mark.browser
def test_app_in_browser(tmp_path, app, demo_dir):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    if not (CHROMIUM and CHROMEDRIVER):  # a failure, not a skip: CI must not pass without the browser
        pytest.fail("needs Debian's chromium and chromium-driver: `make test` installs them (make browser); "
                    "where no browser can be installed, deselect this test with -m 'not browser'")  # fmt: skip
    real = os.environ.get("FULLVQ_APP_DEMO_DIR")
    local = Path(real or demo_dir)
    tokenizer = FVQModel.from_pretrained(local / "fvq" / "model")
    size, grid = tokenizer.config.sample_size, tokenizer.config.sample_size // tokenizer.downsample_factor
    port = free_port()
    command = [
        sys.executable,
        str(ROOT / "examples" / "app.py"),
        "--port",
        str(port),
        "--usage-images",
        "300",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GRADIO_ANALYTICS_ENABLED": "False"}
    hub, log, process, driver = HubServer().start(), open(tmp_path / "app.log", "w"), None, None
    if real:
        command += ["--demo-dir", real]
    else:  # the FVQ tokenizer and the pipeline by Hub id (the loopback Hub), the plain VQ one by local path
        publish(hub, "your-org/fvq-tiny", demo_dir / "fvq" / "model")
        publish(hub, "your-org/llamagen-tiny", demo_dir / "pipeline")
        command += ["--tokenizer", "your-org/fvq-tiny", "--compare-tokenizer", str(demo_dir / "vq" / "model"),
                    "--pipeline", "your-org/llamagen-tiny"]  # fmt: skip
        env.update(HF_ENDPOINT=hub.endpoint, HF_HUB_OFFLINE="0", HF_HOME=str(tmp_path / "hf-home"))
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1250",
    ):
        options.add_argument(flag)
    try:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        url = f"http://127.0.0.1:{port}/"
        wait_for_server(url, process, tmp_path / "app.log")
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        driver.get(url)
        WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#tok-button"))

        driver.find_element(By.CSS_SELECTOR, "#tok-button").click()
        scale = round(256 / size)
        for elem_id in ("tok-original", "tok-recon", "tok-map"):
            image = shown_image(driver, elem_id)
            expected = (
                (size * scale, size * scale) if elem_id != "tok-map" else (grid * round(256 / grid),) * 2
            )
            assert image.size == expected, elem_id
            assert non_blank(image), f"{elem_id} is blank"
        assert non_blank(shown_image(driver, "tok-usage"))
        info = driver.find_element(By.CSS_SELECTOR, "#tok-info").text
        assert "PSNR" in info and "dB" in info and "codes used on the test split" in info
        time.sleep(0.5)  # let the page settle (progress bars gone) before the screenshot
        driver.save_screenshot(str(tmp_path / "app.png"))

        driver.find_element(By.XPATH, "//button[@role='tab' and contains(., 'Compare')]").click()
        WebDriverWait(driver, 30).until(
            lambda d: d.find_element(By.CSS_SELECTOR, "#cmp-button").is_displayed()
        )
        driver.find_element(By.CSS_SELECTOR, "#cmp-button").click()
        for elem_id in ("cmp-original", "cmp-recon-0", "cmp-recon-1"):
            image = shown_image(driver, elem_id)
            assert image.size == (size * scale, size * scale) and non_blank(image), elem_id
        table = driver.find_element(By.CSS_SELECTOR, "#cmp-info table").text  # rendered as a table
        assert "FVQ (VQBridge)" in table and "plain VQ" in table and table.count(" dB") == 2

        driver.find_element(By.XPATH, "//button[@role='tab' and contains(., 'Generate')]").click()
        WebDriverWait(driver, 30).until(
            lambda d: d.find_element(By.CSS_SELECTOR, "#gen-button").is_displayed()
        )
        driver.find_element(By.CSS_SELECTOR, "#gen-button").click()
        samples = shown_image(driver, "gen-grid", timeout=300)
        n = 10
        assert samples.size == app.grid_layout(n, 8, size, size)[:2]
        assert non_blank(samples.crop((app.GRID_MARGIN, 0, samples.width, samples.height)))
        assert "10 classes x 8 samples" in driver.find_element(By.CSS_SELECTOR, "#gen-info").text
        driver.save_screenshot(str(tmp_path / "app_generate.png"))
        # an unreadable upload: refused with a message naming the file, shown by the page
        driver.find_element(By.XPATH, "//button[@role='tab' and contains(., 'Tokenize')]").click()
        broken = tmp_path / "broken.png"
        broken.write_bytes(b"not an image")
        driver.find_element(By.CSS_SELECTOR, "#tok-upload input[type=file]").send_keys(str(broken))
        WebDriverWait(driver, 60).until(lambda d: "broken" in d.find_element(By.ID, "tok-upload").text)
        driver.find_element(By.CSS_SELECTOR, "#tok-button").click()
        toast = WebDriverWait(driver, 60).until(
            lambda d: [
                t.text for t in d.find_elements(By.CSS_SELECTOR, ".toast-body") if "broken.png" in t.text
            ]
        )
        assert "broken.png could not be read as an image (not a known image format" in toast[0]
        assert "Upload a PNG" in toast[0]
        if not real:  # the app did pull both repos from the Hub
            pulled = {path.split("/resolve/")[0] for method, path in hub.requests if "/resolve/" in path}
            assert {"/your-org/fvq-tiny", "/your-org/llamagen-tiny"} <= pulled, pulled
        for name in ("app.png", "app_generate.png"):
            assert non_blank(Image.open(tmp_path / name))
        if os.environ.get("FULLVQ_APP_SCREENSHOT"):
            target = Path(os.environ["FULLVQ_APP_SCREENSHOT"])
            shutil.copy(tmp_path / "app.png", target)  # the Tokenize tab
    finally:
        if driver is not None:
            driver.quit()
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        hub.stop()
        log.close()
