"""HTTP: blueprints that parse requests, call the core, and render partials."""
