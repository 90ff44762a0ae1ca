"""The environment a job on a remote Ray cluster is given: non-secret settings only.

Ray writes a job's runtime env into its logs and job table, so only names on
an allowlist travel (endpoint, region, GDAL options), and never a secret.
"""

from __future__ import annotations

import os
import re

# Variables that configure object-store access without being secrets: forwarded
# to a remote cluster's workers.  Credentials are never forwarded (Ray writes a
# job's runtime env into its logs): the cluster's nodes must hold their own.
FORWARDED_ENV_PREFIXES = ("GDAL_", "CPL_", "VSI_", "AERIALDET_")
FORWARDED_AWS = ("AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_S3_ADDRESSING_STYLE")


# Names that carry a secret even under a forwarded prefix (GDAL_HTTP_USERPWD, GDAL_HTTP_HEADERS, ...).
SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|USERPWD|BEARER|HEADER|CREDENTIAL|KEY", re.IGNORECASE)


def forwarded_env() -> dict[str, str]:
    """Non-secret settings a remote cluster's workers need: endpoint, region, GDAL options.

    Nothing whose name looks like a secret is forwarded: Ray writes a job's
    runtime env into its logs.
    """
    return {
        k: v
        for k, v in os.environ.items()
        if (k.startswith(FORWARDED_ENV_PREFIXES) or k in FORWARDED_AWS) and not SECRET_NAME.search(k)
    }
