"""Validates an OpenAPI document with openapi-spec-validator (the version it declares).

    openapi_check.py openapi/openapi.json

Prints {"valid": true, "openapi": "3.1.0", "paths": n}; exits 1 (with the error) when invalid.
"""

import json
import sys

from openapi_spec_validator import validate
from openapi_spec_validator.readers import read_from_filename


def main():
    document, _ = read_from_filename(sys.argv[1])
    try:
        validate(document)
    except Exception as err:
        print(json.dumps({"valid": False, "error": f"{type(err).__name__}: {err}"}))
        sys.exit(1)
    print(json.dumps({"valid": True, "openapi": document["openapi"], "paths": len(document["paths"])}))


if __name__ == "__main__":
    main()
