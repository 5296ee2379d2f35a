"""The control API's contract: a JSON Schema for every answer of `RUN_DIR/control.sock`, in
`schemas/`, shipped with the package (the tests check every answer against them)."""
