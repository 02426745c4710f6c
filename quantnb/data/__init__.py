# The importer registers the bundled sample as the content of a newly built default database, so it is
# loaded with `quantnb.data.db` and `data.db` itself never imports the importer (layers look down only).
from . import importer  # noqa: F401,E402
