"""`python -m noam_plugin ...` runs the `noam-plugin` command line."""

from noam_plugin.cli import main

raise SystemExit(main())
