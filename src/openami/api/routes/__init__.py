"""The API's routers, one module per resource; ``openami.api.app.create_api`` mounts them."""
