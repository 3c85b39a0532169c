from structure_align.cli import main

raise SystemExit(main())
