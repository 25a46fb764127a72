//! dpkg database model and apt-equivalent purge planning (issue 3). Owned by the dpkg work.
