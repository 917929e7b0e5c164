"""10 concurrent 100 MiB uploads over HTTP into the S3 adapter (moto's S3 server).

Prints the server's peak RSS growth (target: at most 200 MiB for all ten) and its
throughput next to uploading the same bytes straight to the S3 endpoint with
aiobotocore (8 MiB multipart parts, same concurrency), measured in the same run.
"""

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).parent.parent))
from bench.edge import free_port, make_key, wait_up

UPLOADS, MIB = 10, 1024 * 1024
SIZE = 100 * MIB


def start_moto(port: int) -> subprocess.Popen[bytes]:
    code = (
        "import time; from moto.server import ThreadedMotoServer; "
        f"ThreadedMotoServer(ip_address='127.0.0.1', port={port}, verbose=False).start(); "
        "time.sleep(10**9)"
    )
    return subprocess.Popen([sys.executable, "-c", code])


def s3_env(endpoint: str) -> dict[str, str]:
    return {
        "ATELIER_S3_BUCKET": "bench",
        "ATELIER_S3_ENDPOINT_URL": endpoint,
        "ATELIER_S3_ACCESS_KEY_ID": "testing",
        "ATELIER_S3_SECRET_ACCESS_KEY": "testing",
    }


async def direct(endpoint: str, source: Path) -> float:
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    # The same client settings Atelier uses, so the comparison is of the paths, not configs.
    config = AioConfig(
        max_pool_connections=64,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"payload_signing_enabled": False},
    )
    async with get_session().create_client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        config=config,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ) as client:

        async def one(n: int) -> None:
            key = f"direct/{n}"
            upload = await client.create_multipart_upload(Bucket="bench", Key=key)
            parts = []
            with source.open("rb") as handle:
                number = 1
                while chunk := handle.read(8 * MIB):
                    part = await client.upload_part(
                        Bucket="bench",
                        Key=key,
                        UploadId=upload["UploadId"],
                        PartNumber=number,
                        Body=chunk,
                    )
                    parts.append({"ETag": part["ETag"], "PartNumber": number})
                    number += 1
            await client.complete_multipart_upload(
                Bucket="bench",
                Key=key,
                UploadId=upload["UploadId"],
                MultipartUpload={"Parts": parts},
            )

        started = time.perf_counter()
        await asyncio.gather(*(one(n) for n in range(UPLOADS)))
        return time.perf_counter() - started


async def through_atelier(
    base: str, key: str, source: Path, server: psutil.Process
) -> tuple[float, int]:
    async with httpx.AsyncClient(base_url=base) as http:
        conversation = (
            await http.post(
                "/v1/conversations",
                json={},
                headers={"Authorization": f"Bearer {key}", "X-User-ID": "bench"},
            )
        ).json()["id"]
    baseline = server.memory_info().rss
    peak = baseline
    curls = [
        await asyncio.create_subprocess_exec(
            "curl",
            "--silent",
            "--fail",
            "-o",
            "/dev/null",
            "-T",
            str(source),
            "-H",
            f"Authorization: Bearer {key}",
            "-H",
            "X-User-ID: bench",
            f"{base}/v1/conversations/{conversation}/files/upload-{n}.bin",
        )
        for n in range(UPLOADS)
    ]
    started = time.perf_counter()
    waiting = asyncio.gather(*(c.wait() for c in curls))
    while not waiting.done():
        peak = max(peak, server.memory_info().rss)
        await asyncio.sleep(0.02)
    elapsed = time.perf_counter() - started
    codes = await waiting
    assert codes == [0] * UPLOADS, codes
    return elapsed, peak - baseline


def main() -> None:
    with tempfile.TemporaryDirectory() as workdir:
        source = Path(workdir) / "source.bin"
        with source.open("wb") as handle:
            for _ in range(SIZE // MIB):
                handle.write(os.urandom(MIB))
        moto_port, app_port = free_port(), free_port()
        endpoint = f"http://127.0.0.1:{moto_port}"
        moto = start_moto(moto_port)
        time.sleep(2)
        import boto3

        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        ).create_bucket(Bucket="bench")
        key = make_key(workdir)
        env = {
            **os.environ,
            **s3_env(endpoint),
            "ATELIER_DATA_DIR": workdir,
            "ATELIER_LOG_LEVEL": "WARNING",
            "ATELIER_RATE_LIMIT_ENABLED": "false",
        }
        code = (
            "import uvicorn; from atelier.cli import app_from_environment; "
            f"uvicorn.run(app_from_environment(), host='127.0.0.1', port={app_port}, log_config=None)"
        )
        app = subprocess.Popen([sys.executable, "-c", code], env=env)
        try:
            wait_up(app_port)
            direct_seconds = asyncio.run(direct(endpoint, source))
            atelier_seconds, growth = asyncio.run(
                through_atelier(
                    f"http://127.0.0.1:{app_port}", key, source, psutil.Process(app.pid)
                )
            )
        finally:
            app.terminate()
            moto.terminate()
            app.wait(10)
            moto.wait(10)
    total = UPLOADS * SIZE / MIB
    print(f"{UPLOADS} concurrent uploads of {SIZE // MIB} MiB into S3 (moto)")
    print(
        f"  straight to S3 (aiobotocore): {direct_seconds:6.1f} s  {total / direct_seconds:7.1f} MiB/s"
    )
    print(
        f"  through Atelier (HTTP)      : {atelier_seconds:6.1f} s  {total / atelier_seconds:7.1f} MiB/s"
    )
    print(f"  throughput ratio atelier/direct = {direct_seconds / atelier_seconds:.2f}")
    print(f"  server peak RSS growth: {growth / MIB:.0f} MiB for all {UPLOADS} (target <= 200 MiB)")


if __name__ == "__main__":
    main()
