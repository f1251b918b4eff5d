"""Package mapping: the design card keeps ingest/, processors/, dashboard/ and models/ at the top
of the repository; they install as sub-packages of ``callsense`` (``callsense.ingest`` ...)."""

from setuptools import find_packages, setup

MAPPED = ("ingest", "processors", "dashboard", "models")

packages = ["callsense"] + [f"callsense.{p}" for p in find_packages("callsense")]
package_dir = {"callsense": "callsense"}
for top in MAPPED:
    packages += [f"callsense.{top}"] + [f"callsense.{top}.{p}" for p in find_packages(top)]
    package_dir[f"callsense.{top}"] = top

DATA = ["*.json", "*.pt", "*.md", "*.ini", "*.mako", "*.flac", "*.wav", "*.csv", "*.css",
        "*.js", "*.txt", "*.yaml", "*.onnx", "*.bin", "*.png"]

setup(
    packages=packages,
    package_dir=package_dir,
    package_data={p: DATA + ["**/*"] for p in packages},
    include_package_data=True,
)
