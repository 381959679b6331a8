from appevents._cli import main

raise SystemExit(main())
