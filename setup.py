"""Only the C extension lives here; everything else about the package is in pyproject.toml.

trainer/data/_jpeg_region.c decodes the crop region of a JPEG (libjpeg-turbo's partial decode, which no
package on PyPI exposes). It needs a C compiler and libjpeg-turbo's headers (Debian: libjpeg-dev). It is
optional: where it cannot be built, the install goes on and the loader decodes whole images instead
(slower; `trainer.data.jpeg.REGION_DECODE` says which, and every run records it as `region_decode`).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("trainer.data._jpeg_region", ["trainer/data/_jpeg_region.c"], libraries=["jpeg"],
                             extra_compile_args=["-O2"], optional=True)])
