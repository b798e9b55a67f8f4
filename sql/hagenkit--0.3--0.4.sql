-- hagenkit upgrade 0.3 -> 0.4.  Every change to src/sql/ after 0.3 is
-- repeated here, so that ALTER EXTENSION hagenkit UPDATE gives exactly the
-- catalog of a fresh install (test/t/006_upgrade.pl compares them).
\echo Use "ALTER EXTENSION hagenkit UPDATE TO '0.4'" to load this file. \quit
